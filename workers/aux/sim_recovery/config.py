"""Config of aux.sim_recovery: SIM-DMIS for y = f(A x*) with an unknown link, on 16x16 digits.

Pydantic only (no torch): the job registry imports this on machines without torch.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.aux.common.config import AuxConfig, StrictModel

Link = Literal["sign", "cubic"]
Positive = Annotated[float, Field(gt=0)]
TEST_SPLIT_SIZE = 449  # held-out digits (workers.aux.common.data.digits("test")), validation + test come from it


class PriorConfig(StrictModel):
    path: str | None = Field(None, description="A diffusers DDPM directory (unet/ + scheduler/, or the flat "
                             "layout of google/ddpm-cifar10-32) used as the prior; its samples must be 1x16x16. "
                             "Unset: the shared digits DDPM (workers.aux.common.ddpm, trained once and cached).")
    train_steps: int = Field(2000, ge=1, description="Training steps of the shared digits DDPM when path is unset "
                             "(2000 = the shared default every method reuses; the smoke preset trains a 60-step one).")


class DataConfig(StrictModel):
    num_val: int = Field(4, ge=1, description="Held-out digits used only to choose C_s and C_s' per (link, arm), pooled over m.")
    num_test: int = Field(24, ge=1, description="Held-out digits (disjoint from the validation ones) the "
                          "reported metrics are averaged over.")


class MeasureConfig(StrictModel):
    links: list[Link] = Field(["sign", "cubic"], min_length=1, description="Links f to run, through the same code: "
                              "sign (1-bit, y = sign(Ax + e)) and cubic (y = (Ax)^3 + e).")
    m_values: list[Annotated[int, Field(ge=1)]] = Field([32, 64, 128], min_length=1, description="Numbers of "
                                                        "measurements m (n = 256 pixels).")
    noise_std: float = Field(0.05, ge=0, description="Std of the Gaussian noise e (paper: 0.05).")


class LinkGrid(StrictModel):
    c_s: list[Positive] = Field(min_length=1, description="Candidates for C_s (t* from sigma/alpha = C_s/sqrt(m)).")
    c_s_prime: list[Positive] = Field(min_length=1, description="Candidates for C_s' (x_t* = alpha C_s' A^T y/m); "
                                      "one constant per dataset and link, chosen on the validation digits.")


class GridsConfig(StrictModel):
    # Centres: C_s' ~ r / mu(r) with r = mean ||x|| = 11.94 of the train digits (sign: r sqrt(pi/2) = 15.0;
    # cubic: 1 / (3 r^2) = 2.33e-3); C_s ~ C_s' * rms(f) (about 15 for both). See docs/methods/sim_recovery.md.
    sign: LinkGrid = Field(LinkGrid(c_s=[24.0, 40.0], c_s_prime=[15.0]),
                           description="C_s and C_s' candidates for the 1-bit link.")
    cubic: LinkGrid = Field(LinkGrid(c_s=[24.0, 40.0], c_s_prime=[0.0023]),
                            description="C_s and C_s' candidates for the cubic link.")


class SolverConfig(StrictModel):
    inversion_steps: int = Field(30, ge=1, description="DDIM steps of the inversion G-dagger (t* -> T; 0 -> T for "
                                 "SIM-DMFIS).")
    sampling_steps: int = Field(15, ge=1, description="DDIM steps (network evaluations) of the sampling G "
                                "(T -> 0; t* -> 0 for SIM-DMS).")
    batch_size: int = Field(256, ge=1, description="Problems per network call (memory knob; results depend on "
                            "it only through float32 rounding).")


class SimRecoveryConfig(AuxConfig):
    """SIM-DMIS against the linear estimator, SIM-DMS and SIM-DMFIS (aux_methods_b.md section 2)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"prior": {"train_steps": 60}, "data": {"num_val": 1, "num_test": 2}, "measure": {"m_values": [64]},
                  "grids": {"sign": {"c_s": [20.0], "c_s_prime": [15.0]},
                            "cubic": {"c_s": [20.0], "c_s_prime": [0.0023]}},
                  "solver": {"inversion_steps": 2, "sampling_steps": 2}},
        "quick": {},
        "full": {"data": {"num_val": 8, "num_test": 96},
                 "grids": {"sign": {"c_s": [24.0, 32.0, 40.0, 48.0, 64.0], "c_s_prime": [8.0, 12.0, 15.0, 18.0, 22.0]},
                           "cubic": {"c_s": [24.0, 32.0, 40.0, 48.0, 64.0],
                                     "c_s_prime": [0.0015, 0.0021, 0.0028, 0.0034, 0.0042]}},
                 "solver": {"inversion_steps": 50, "sampling_steps": 25}},
    }

    prior: PriorConfig = Field(PriorConfig(), description="The diffusion prior.")
    data: DataConfig = Field(DataConfig(), description="Validation and test signals (held-out digits).")
    measure: MeasureConfig = Field(MeasureConfig(), description="The single index model.")
    grids: GridsConfig = Field(GridsConfig(), description="Hyper-parameter grids, searched on the validation digits.")
    solver: SolverConfig = Field(SolverConfig(), description="DDIM step counts.")

    @model_validator(mode="after")
    def _check(self) -> SimRecoveryConfig:
        if self.data.num_val + self.data.num_test > TEST_SPLIT_SIZE:
            raise ValueError(f"data.num_val + data.num_test must be <= {TEST_SPLIT_SIZE} (the held-out digits), got "
                             f"{self.data.num_val} + {self.data.num_test}")
        if len(set(self.measure.m_values)) != len(self.measure.m_values):
            raise ValueError(f"measure.m_values must be distinct, got {self.measure.m_values}")
        if len(set(self.measure.links)) != len(self.measure.links):
            raise ValueError(f"measure.links must be distinct, got {self.measure.links}")
        for link in ("sign", "cubic"):
            c_s_max, m_min = max(getattr(self.grids, link).c_s), min(self.measure.m_values)
            if c_s_max**2 / m_min > 1e4:  # abar(t*) < 1e-4: past the end of any usual VP schedule
                raise ValueError(f"grids.{link}.c_s must keep C_s / sqrt(m) <= 100 so t* lies inside the schedule; "
                                 f"C_s = {c_s_max} with m = {m_min} gives {c_s_max / m_min**0.5:.3g}")
        return self
