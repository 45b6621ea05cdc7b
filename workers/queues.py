"""Queue names and job function paths, shared by the web side (which enqueues) and the workers."""

EVENTS_QUEUE = "mediahook-events"
QUEUES = (EVENTS_QUEUE,)

# Referenced by dotted path so the web side never imports worker code.
PROCESS_EVENT = "workers.events.process_event"
