"""Named PMTRec configurations (the ablations of ``docs/pmtrec-method.md``): parameter instances,
not subclasses. Each is ``PMTRec`` built with the parameters listed here over ``PMTRecParams``'
defaults; parameters given by the user override both.

| name                          | differs from ``pmtrec``                                        |
| ----------------------------- | -------------------------------------------------------------- |
| ``pmtrec``                    | (the defaults; the class ``PMTRec`` itself)                    |
| ``pmtrec-no-personalization`` | ``weight_mode="shared"``                                       |
| ``pmtrec-no-align``           | ``align=False``                                                |
| ``pmtrec-no-schedule``        | ``schedule="none"`` (beta = 0)                                 |
| ``pmtrec-no-gmb``             | ``rho=0`` (GMB off; behaves as ``pmtrec-v2``)                  |
| ``pmtrec-gmb``                | v2's per-side GMB: ``gmb_mode="side"``, ``rho=GMB_ON_RHO``     |
| ``ew-align``                  | uniform weights, ``rho=0``, align on, no schedule              |
| ``ew-gmb``                    | uniform weights, the default GMB, no align, no schedule        |
| ``pmtrec-delta``              | per-entity deviations ``delta="learned"`` (needs the meta split)|
| ``pmtrec-delta-permuted``     | the permuted control ``delta="permuted"`` (H3)                 |
| ``pmtrec-meta-spsa``          | usefulness scales ``usefulness="meta_spsa"`` (meta split)      |
| ``pmtrec-moments``            | per-task second moments ``moment_balance=True``                |
| ``pmtrec-v2``                 | every v3 switch off (``V3_OFF``): v2's behaviour, kept as the  |
|                               | record of v2 when the v3 study changes the defaults            |
| ``pmtrec-v2-<ablation>``      | each ``pmtrec-<ablation>`` above with every v3 switch off      |
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pmtrec_lab.mtl.params import MethodParams
from pmtrec_lab.mtl.pmtrec import PMTRec, PMTRecParams
from pmtrec_lab.mtl.registry import register_preset

__all__ = ["GMB_ON_RHO", "PRESETS", "V2_ABLATIONS", "V3_ABLATIONS", "V3_OFF"]

#: GMB strength of ``pmtrec-gmb`` (v2's per-side rule at the prototype's middle value).
GMB_ON_RHO = 0.5


def _gmb_must_be_on(p: MethodParams) -> None:
    assert isinstance(p, PMTRecParams)
    if p.rho == 0.0:
        raise ValueError("needs rho > 0 (GMB on); got rho=0 (that would be a silent copy of EW)")


_UNIFORM = {"weight_mode": "uniform", "schedule": "none"}

#: The v3 switches at their v2 (off) values (``docs/pmtrec-method.md``, "PMTRec v3"). When the
#: v3 study changes a v2 parameter's default, its v2 value is added here, so ``pmtrec-v2``
#: stays v2 (``tests/test_pmtrec.py`` pins it).
V3_OFF: dict[str, Any] = {
    "norm_mode": "raw", "focus_everywhere": False, "gmb_mode": "side", "rho": 0.0,
    "usefulness": "off", "delta": "off", "moment_balance": False,
}  # fmt: skip

#: preset name -> (the parameters it fixes, what it is)
PRESETS: MappingProxyType[str, tuple[dict[str, Any], str]] = MappingProxyType({
    "pmtrec-no-personalization": (
        {"weight_mode": "shared"}, "PMTRec with shared (per-side batch-mean) weights"),
    "pmtrec-no-align": ({"align": False}, "PMTRec without TF alignment"),
    "pmtrec-no-schedule": ({"schedule": "none"}, "PMTRec without the TF schedule (beta = 0)"),
    "pmtrec-no-gmb": ({"rho": 0.0}, "PMTRec without GMB (rho = 0)"),
    "pmtrec-gmb": (
        {"gmb_mode": "side", "rho": GMB_ON_RHO}, "PMTRec with v2's per-side GMB (rho 0.5)"),
    "ew-align": ({**_UNIFORM, "rho": 0.0, "align": True}, "Equal weights plus TF alignment only"),
    "ew-gmb": ({**_UNIFORM, "align": False}, "Equal weights plus the default (reduce-only) GMB only"),
    "pmtrec-v2": (dict(V3_OFF), "PMTRec v2: every v3 switch off (the record of v2)"),
})  # fmt: skip

#: ``pmtrec-v2-*``: v2's ablations, pinned to v2 like ``pmtrec-v2`` (issue "PMTRec v3", item 8)
V2_ABLATIONS: MappingProxyType[str, tuple[dict[str, Any], str]] = MappingProxyType({
    f"pmtrec-v2-{name.removeprefix('pmtrec-')}": ({**V3_OFF, **params}, f"{summary}, v2 (v3 off)")
    for name, (params, summary) in PRESETS.items()
    if name.startswith("pmtrec-") and name != "pmtrec-v2"
})  # fmt: skip

#: v3's ablations that switch on a piece the study did not choose (``docs/pmtrec-method.md``,
#: "Presets"); no v2 counterparts (their v2 forms are the study's variants)
V3_ABLATIONS: MappingProxyType[str, tuple[dict[str, Any], str]] = MappingProxyType({
    "pmtrec-delta": ({"delta": "learned"}, "PMTRec with learned per-entity deviations delta"),
    "pmtrec-delta-permuted": (
        {"delta": "permuted"}, "PMTRec with the deviations permuted within each side (H3 control)"),
    "pmtrec-meta-spsa": ({"usefulness": "meta_spsa"}, "PMTRec with meta-loss usefulness scales (SPSA)"),
    "pmtrec-moments": ({"moment_balance": True}, "PMTRec with per-task second moments"),
})  # fmt: skip
PRESETS = MappingProxyType({**PRESETS, **V2_ABLATIONS, **V3_ABLATIONS})

for _name, (_overrides, _summary) in PRESETS.items():
    register_preset(
        _name, PMTRec, _overrides, _summary, check=_gmb_must_be_on if _name == "ew-gmb" else None
    )
