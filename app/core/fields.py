"""Marshmallow fields for the shapes vendors actually send, and the strict schema base."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields


class Strict(Schema):
    """Refuses unknown keys (config sections, admin API requests): a typo is an error, never a
    key silently ignored in favour of a default. Callback schemas keep unknown fields instead."""

    class Meta:
        unknown = RAISE


class JSONString(fields.Field):
    """A JSON object sent as a string inside the JSON body (MetaStudio's ``message``).

    Decodes the string and loads it with ``schema``, so an error is reported under this
    field's name, e.g. ``message.room_id``.
    """

    def __init__(self, schema: type[Schema], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schema = schema()

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        if not isinstance(value, str):
            raise ValidationError("Must be a string holding a JSON object.")
        try:
            inner = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc.msg} at position {exc.pos}.") from None
        except (ValueError, RecursionError):
            # A plain ValueError is an integer past Python's digit limit (no .msg/.pos);
            # RecursionError is nesting deeper than the parser allows. Both are bad input.
            raise ValidationError("Not valid JSON: nested too deeply or a number too long.") from None
        if not isinstance(inner, dict):
            raise ValidationError("Must hold a JSON object.")
        return self.schema.load(inner)  # its ValidationError nests under this field

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Numeric(fields.Field):
    """A number the vendor may send as a JSON number or as a string of digits ("36", "11153160").

    Loads to an int (or a float when ``decimals`` and the value has a fraction).
    """

    default_error_messages = {"invalid": "Not a valid number (a JSON number or a string of digits)."}

    def __init__(self, *, decimals: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decimals = decimals

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | float:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):  # 1e400, NaN, Infinity: Python's json accepts them
                raise self.make_error("invalid")
            if value.is_integer():
                return int(value)
            if self.decimals:
                return value
            raise self.make_error("invalid")
        if isinstance(value, str):
            # ASCII digits only: int()/float() alone would also take "1_000", "\u0662",
            # "nan" and "infinity".
            text = value.strip()
            if _INTEGER_TEXT.fullmatch(text):
                try:
                    return int(text)
                except ValueError:  # more digits than Python converts
                    raise self.make_error("invalid") from None
            if self.decimals and _DECIMAL_TEXT.fullmatch(text):
                number = float(text)
                if math.isfinite(number):
                    return number
        raise self.make_error("invalid")


class Text(fields.Field):
    """A value documented as a string that some vendors send as a number (timestamps, ids)."""

    default_error_messages = {"invalid": "Not a valid string."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.make_error("invalid")


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Marshmallow's nested errors as ``{"message.room_id": [...], "data.videoListInfo.0.videoId": [...]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = prefix if key == "_schema" else (f"{prefix}.{key}" if prefix else str(key))
            for path, errs in flatten_errors(value, name).items():
                out.setdefault(path or "_body", []).extend(errs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "_body"] = list(messages)
    else:
        out[prefix or "_body"] = [str(messages)]
    return out
