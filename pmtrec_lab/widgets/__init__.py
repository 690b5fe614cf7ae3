"""ipywidgets panels built on ``pmtrec_lab.viz`` and ``pmtrec_lab.train`` (interactive use in JupyterLab)."""

from pmtrec_lab.widgets.ablation import (
    CONTROL_DEFAULTS,
    AblationExplorer,
    config_from_controls,
    describe_controls,
)

__all__ = ["CONTROL_DEFAULTS", "AblationExplorer", "config_from_controls", "describe_controls"]
