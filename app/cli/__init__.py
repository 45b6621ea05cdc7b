"""The `mediahook` command: operations over the admin API, the worker, the dev supervisor."""
