"""Queue names and job function paths, shared by the web side (which enqueues) and the workers."""

EVENTS_QUEUE = "mediahook-events"
ACTIONS_QUEUE = "mediahook-actions"
# A worker takes events first: deciding actions is quick, and it keeps callbacks flowing.
QUEUES = (EVENTS_QUEUE, ACTIONS_QUEUE)

# Referenced by dotted path, so the receive path enqueues without loading worker code.
PROCESS_EVENT = "workers.process.process_event"

# Actions failed for good (zset: action id -> when): the console, the API and /metrics read it.
FAILED_INDEX = "mh:actions:failed"
