"""The README documents every setting (env var) the code reads."""

from __future__ import annotations

from serve_ml.core.settings import REPO_ROOT, Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        env = field.validation_alias.choices[0] if field.validation_alias else f"SERVE_ML_{name.upper()}"
        assert f"| `{env}` |" in readme, env
