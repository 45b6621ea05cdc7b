from app.core.events import read_event
from tests.helpers import live_event, signed_path


def test_signed_event_is_recorded_and_processed(client, redis_client, run_jobs, app):
    body = live_event("RTMP_STREAM_STATE_CHANGE", room_id="r", job_id="j", output_url="rtmp://x/y", stream_key="s",
                      state="CONNECTED")
    r = client.post(signed_path(), data=body)
    assert r.status_code == 200, r.json
    assert run_jobs() == 1
    assert read_event(app.extensions["mediahook"].store.redis, r.json["event_id"])["status"] == "processed"
