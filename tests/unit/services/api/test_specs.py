"""Job specs as the service sees them: field paths of errors, GPUs asked, and the OpenAPI error shape."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the job service needs the api extra")

from orchestration.jobs import JOB_KINDS, JobSpecError, job_gpus, validate_job  # noqa: E402
from services.api.problems import problem_openapi  # noqa: E402


@pytest.mark.parametrize(("config", "field"), [
    ({"rollout": {"num_candidates": 4}}, "config.regen.num_selected"),  # cross-field: K (24) > N
    ({"regen": {"num_selected": 3}}, "config.regen.num_selected"),  # K odd for best_worst
    ({"resources": {"placement": "split", "num_gpus": 1}}, "config.resources.placement"),
    ({"rollout": {"precision": "bf16"}}, "config"),  # a rule that names no field up front
    ({"lora": {"rank": "big"}}, "config.lora.rank"),
])
def test_errors_name_the_field(config: dict, field: str) -> None:
    with pytest.raises(JobSpecError) as err:
        validate_job("solrl", config)
    assert err.value.errors[0][0] == field


def test_gpus_come_from_the_train_config() -> None:
    kind, cfg = validate_job("solrl", {"resources": {"num_gpus": 4}})
    assert job_gpus(kind, cfg) == (4.0, "config.resources.num_gpus")
    kind, cfg = validate_job("eval", {"run_dir": "/x"})
    assert job_gpus(kind, cfg) == (0.0, "config")


def test_aux_kinds_queue_behind_rl() -> None:
    assert {k.priority for name, k in JOB_KINDS.items() if name.startswith("aux.")} == {"aux"}
    assert JOB_KINDS["solrl"].priority == JOB_KINDS["eval"].priority == "rl"


def test_problem_openapi_documents_errors_as_problems() -> None:
    spec = {"paths": {"/x": {"get": {"responses": {
        "200": {"content": {"application/json": {}}},
        "422": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}},
    }}}}, "components": {"schemas": {"HTTPValidationError": {}, "ValidationError": {}}}}
    out = problem_openapi(spec)
    responses = out["paths"]["/x"]["get"]["responses"]
    assert responses["200"] == {"content": {"application/json": {}}}
    assert responses["422"]["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert set(out["components"]["schemas"]) == {"Problem", "FieldError"}
