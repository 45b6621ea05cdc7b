"""CDNetworks Cloud VoD callbacks: video upload and video transcoding.

The vendor documents no signature for these: the callback URL carries a secret ``token``
query parameter. Numbers arrive as strings in places (``videoSize``, ``transcodeState``...)
and as ints in others; both are accepted.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, pre_load, validate

from app.core.config import Settings
from app.core.fields import Numeric, Text
from app.sources.base import TOKEN_PARAM, ApiDoc, Endpoint, Parsed, Request, hook_path, plain_delivery, token_refusal

NAME = "cdnetworks"
UPLOAD_PATH = "vod-upload"
TRANSCODE_PATH = "vod-transcode"
UPLOAD_HOOK = hook_path(NAME, UPLOAD_PATH)
TRANSCODE_HOOK = hook_path(NAME, TRANSCODE_PATH)
UPLOAD_EVENT = "VOD_UPLOAD"
TRANSCODE_EVENT = "VOD_TRANSCODE"
MAX_REFS = 100
KEPT_HEADERS: tuple[str, ...] = ()  # nothing of CDNetworks' own beyond base.KEPT_HEADERS
# Both callbacks name their videos: the same body is the same delivery.
delivery = plain_delivery


def refusal(req: Request, settings: Settings) -> str | None:
    """Why the request's token is refused (never the token), or None when it holds."""
    src = settings.cdnetworks_source
    if src is None:
        return "no [sources.cdnetworks] token configured"
    return token_refusal(req, src.token)


class _Open(Schema):
    """Vendors add fields: keep what we do not know."""

    class Meta:
        unknown = INCLUDE


class VideoResolution(_Open):
    clarity = Numeric(allow_none=True)
    serverType = Numeric(allow_none=True)
    height = Numeric(allow_none=True, validate=validate.Range(min=0))
    width = Numeric(allow_none=True, validate=validate.Range(min=0))
    fileSize = Numeric(allow_none=True, validate=validate.Range(min=0))


class VideoInfo(_Open):
    videoId = fields.String(required=True, validate=validate.Length(min=1, max=128))
    videoName = Text(allow_none=True)
    createUser = Text(allow_none=True)
    encrypt = Numeric(allow_none=True, validate=validate.OneOf((0, 1)))
    videoSize = Numeric(allow_none=True, validate=validate.Range(min=0))
    videoDuration = Numeric(allow_none=True, decimals=True, validate=validate.Range(min=0))
    createTime = Text(allow_none=True)
    uploadTime = Text(allow_none=True)
    updateTime = Text(allow_none=True)
    videoDescription = Text(allow_none=True)
    videoClassification = Text(allow_none=True)
    imageUrl = Text(allow_none=True)
    publishDomain = Text(allow_none=True)
    flashPlayerName = Text(allow_none=True)
    flashPlayerId = Text(allow_none=True)
    flashImageRatio = Numeric(allow_none=True)
    flashAutoPlay = Numeric(allow_none=True)
    videoState = Numeric(allow_none=True, validate=validate.OneOf((0, 1)))
    # Its meaning depends on `encrypt`, and the vendor's own example mixes the two
    # numberings, so any documented code (1-5) is accepted here.
    transcodeState = Numeric(allow_none=True, validate=validate.Range(min=1, max=5))
    videoSourceCode = Numeric(allow_none=True)
    videoResolutions = fields.List(fields.Nested(VideoResolution), allow_none=True)


class UploadData(_Open):
    videoTotal = Numeric(allow_none=True, validate=validate.Range(min=0))
    videoListInfo = fields.List(fields.Nested(VideoInfo), required=True)


class UploadCallback(_Open):
    code = Numeric(required=True)
    data = fields.Nested(UploadData, required=True)
    message = Text(allow_none=True)


class VideoUrl(_Open):
    urlType = Text(allow_none=True)
    originUrl = Text(allow_none=True)
    fluentUrl = Text(allow_none=True)
    sdUrl = Text(allow_none=True)
    highUrl = Text(allow_none=True)
    hdPullUrl = Text(allow_none=True)


class TranscodeCallback(_Open):
    videoId = fields.String(required=True, validate=validate.Length(min=1, max=128))
    encrypt = Numeric(allow_none=True, validate=validate.OneOf((0, 1)))
    swfCode = Text(allow_none=True)
    htmlCode = Text(allow_none=True)
    autoCode = Text(allow_none=True)
    tryWatchAutoCode = Text(allow_none=True)
    customCode = Text(allow_none=True)
    videoUrl = fields.List(fields.Nested(VideoUrl), allow_none=True)
    tryWatchVideoUrl = fields.List(fields.Nested(VideoUrl), allow_none=True)

    @pre_load
    def _unwrap(self, data: dict, **_: object) -> dict:
        # Tolerate the {"code", "data": {...}, "message"} envelope the upload callback uses.
        if isinstance(data, dict) and "videoId" not in data and isinstance(data.get("data"), dict):
            return data["data"]
        return data


UPLOAD_SCHEMA = UploadCallback()
TRANSCODE_SCHEMA = TranscodeCallback()


def parse_upload(payload: dict) -> Parsed:
    data = UPLOAD_SCHEMA.load(payload)
    ids = [v["videoId"] for v in data["data"]["videoListInfo"]][:MAX_REFS]
    return Parsed(UPLOAD_EVENT, known=True, refs={"video_ids": ids}, data=data)


def parse_transcode(payload: dict) -> Parsed:
    data = TRANSCODE_SCHEMA.load(payload)
    return Parsed(TRANSCODE_EVENT, known=True, refs={"video_ids": [data["videoId"]]}, data=data)


ENDPOINTS = (
    Endpoint(UPLOAD_PATH, parse_upload, accept_base64=True, summary="CDNetworks Cloud VoD upload callback",
             body="UploadCallback"),
    Endpoint(TRANSCODE_PATH, parse_transcode, accept_base64=True,
             summary="CDNetworks Cloud VoD transcoding callback (bare or in the upload callback's envelope)",
             body={"anyOf": [{"$ref": "#/components/schemas/TranscodeCallback"},
                             {"$ref": "#/components/schemas/TranscodeCallbackEnvelope"}]}),
)

API_DOC = ApiDoc(
    security_schemes={"cdnetworksToken": {"type": "apiKey", "in": "query", "name": TOKEN_PARAM,
                                          "description": "`[sources.cdnetworks] token`, in the callback URL."}},
    security=({"cdnetworksToken": []},),
    schemas={
        "UploadCallback": UPLOAD_SCHEMA,
        "TranscodeCallback": TRANSCODE_SCHEMA,
        "TranscodeCallbackEnvelope": {
            "type": "object", "required": ["data"], "additionalProperties": True,
            "description": "The transcoding callback inside the upload callback's {code, data, message} envelope.",
            "properties": {"code": {}, "message": {}, "data": {"$ref": "#/components/schemas/TranscodeCallback"}}},
    },
)
