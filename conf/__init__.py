"""The Hydra configs: the checkout's top-level ``conf/``, installed as the package ``sdexp.conf``
(pyproject's ``package-dir``), so that ``@hydra.main(config_path="pkg://sdexp.conf")`` finds them
in a wheel (a copy, ``sdexp/conf/``) and in an editable install (this folder itself)."""
