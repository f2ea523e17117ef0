"""What is sent about the run and its host when a run is registered."""

from sentinel_sidecar.config import Settings
from sentinel_sidecar.identity import register_body


def test_register_body_is_flat_without_nulls_or_pid():
    settings = Settings(project_name="p", team="ml", cloud_vendor_id="aws")
    body = register_body(settings, {"NODE_NAME": "n1", "POD_NAME": "pod-1"})
    assert body["project_name"] == "p" and body["team"] == "ml"
    assert body["host_id"] == "n1" and body["host_hostname"] == "pod-1"
    assert body["cloud_vendor_id"] == "aws"
    assert "pid" not in body and None not in body.values()
    assert "cloud_region_id" not in body and "host_ip" not in body
    assert "external_run_id" not in body  # no pod UID outside a pod


def test_register_body_tags_are_an_object_and_the_pod_uid_names_the_run():
    settings = Settings(tags={"team": "ml", "stage": "train"}, command='["python", "t.py"]')
    body = register_body(settings, {"POD_UID": "0b5e-uid"})
    assert body["tags"] == {"team": "ml", "stage": "train"}
    assert body["external_run_id"] == "0b5e-uid"
    assert body["command"] == '["python", "t.py"]'
    mine = register_body(Settings(external_run_id="mine"), {"POD_UID": "0b5e-uid"})
    assert mine["external_run_id"] == "mine"
