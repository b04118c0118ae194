"""backend=kuberay points the job service at a KubeRay cluster's head service (its Jobs API)."""

from __future__ import annotations

from services.api.settings import ApiSettings


def test_kuberay_backend_derives_the_head_service_address(tmp_path):
    settings = ApiSettings(home=tmp_path, backend="kuberay", kuberay_namespace="ml", kuberay_cluster_name="rl")
    assert settings.ray_address == "http://rl-head-svc.ml.svc:8265"


def test_an_explicit_address_wins(tmp_path):
    settings = ApiSettings(home=tmp_path, backend="kuberay", ray_address="http://10.0.0.1:8265")
    assert settings.ray_address == "http://10.0.0.1:8265"


def test_ray_backend_needs_no_cluster_names(tmp_path):
    assert ApiSettings(home=tmp_path).ray_address is None
