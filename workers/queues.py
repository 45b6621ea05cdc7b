"""Queue names and job function paths, shared by the web side (which enqueues) and the workers."""

EVENTS_QUEUE = "mediahook-events"
ACTIONS_QUEUE = "mediahook-actions"
# A worker takes events first: deciding actions is quick, and it keeps callbacks flowing.
QUEUES = (EVENTS_QUEUE, ACTIONS_QUEUE)

# Referenced by dotted path so the web side never imports worker code.
PROCESS_EVENT = "workers.events.process_event"
