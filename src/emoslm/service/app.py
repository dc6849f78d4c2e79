"""The HTTP API of the emotion-aware voice service (FastAPI); its OpenAPI spec is served at ``/openapi.json``.

Every POST and DELETE needs an API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); GETs do not.
Errors are JSON: ``{"error": {"type": ..., "message": ...}}`` with 400 (bad audio), 401 (missing or wrong
key), 404 (unknown speaker or enrollment), 409 (speaker exists, enrollment limit), 413 (request body or audio
too long), 422 (unknown label, malformed request).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Iterator

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from emoslm.errors import AudioError, LabelError
from emoslm.service.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ContextLengthError,
    EmotionInfo,
    Usage,
    conversation_text,
    last_user_audio,
)
from emoslm.service.core import Service, Settings
from emoslm.service.store import Enrollment, Speaker, StoreError

WEB_DIR = Path(__file__).parent / "web"
SPEAKER_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# ------------------------------------------------------------------------------------------ schemas


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class SpeakerCreate(BaseModel):
    id: str | None = Field(default=None, pattern=SPEAKER_ID, description="chosen id (default: generated)")
    name: str | None = Field(default=None, max_length=200)


class SpeakerOut(BaseModel):
    id: str
    name: str
    created: float
    n_enrollments: int


class SpeakerList(BaseModel):
    data: list[SpeakerOut]


class EnrollmentOut(BaseModel):
    id: str
    speaker_id: str
    label: str
    sha256: str
    duration: float
    created: float


class EnrollmentCreated(EnrollmentOut):
    n_enrollments: int = Field(description="the speaker's enrollment count after this one")


class EnrollmentList(BaseModel):
    data: list[EnrollmentOut]


class Deleted(BaseModel):
    id: str
    deleted: bool = True
    n_enrollments_deleted: int = 0


class EmotionResult(BaseModel):
    label: str
    probabilities: dict[str, float]
    speaker_id: str | None
    mode: str = Field(description="'personalised' (k-shot with the speaker's enrollments) or '0-shot'")
    n_enrollments_used: int
    latency_ms: float = Field(description="server time for this request: audio decoding + recognition")
    model_latency_ms: float


class Limits(BaseModel):
    max_upload_mb: float
    max_seconds: float
    min_seconds: float
    max_enrollments_per_speaker: int


class Info(BaseModel):
    status: str = "ok"
    labels: list[str]
    chat_model: str
    echat_model: str | None = Field(default=None, description="E-chat, answering turns with audio (--echat)")
    bundle: str
    n_speakers: int
    n_enrollments: int
    excluded_enrollments: dict[str, str] = Field(description="rows left out at start-up (file missing or altered)")
    limits: Limits


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "emoslm"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------------------------------ errors


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.type, self.message, self.headers = status, type_, message, headers
        super().__init__(message)


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


def _responses(*codes: int) -> dict[int | str, dict]:
    return {c: {"model": ErrorBody} for c in codes}


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (by Content-Length, or while reading)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        too_large = ApiError(413, "request_too_large", f"request body over the limit of {self.limit} bytes")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = _error(too_large.status, too_large.type, too_large.message)
            return await response(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_large
            return message

        return await self.app(scope, counting_receive, send)


# ------------------------------------------------------------------------------------------ API keys

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token (what the openai client sends)")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def require_key(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                key: Annotated[str | None, Security(_header_key)]) -> str:
    """The name of the request's valid API key; 401 when it has none or a wrong one."""
    given = key or (cred.credentials if cred else None)
    if not given:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer KEY or X-API-Key)",
                       {"WWW-Authenticate": "Bearer"})
    name = request.app.state.service.store.check_api_key(given)
    if name is None:
        raise ApiError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})
    return name


# ------------------------------------------------------------------------------------------ the app


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app of a service (loads the model bundle, the store and the chat LLM)."""
    svc = Service(settings)
    app = FastAPI(title="emoslm voice service", version="1",
                  description="Personalised speech emotion recognition and emotion-aware chat. "
                  + __doc__.split("\n\n")[1])
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)

    auth = [Depends(require_key)]

    # ---- errors
    @app.exception_handler(ApiError)
    def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.type, e.message, e.headers)

    @app.exception_handler(StoreError)
    def _store_error(_req: Request, e: StoreError) -> JSONResponse:
        return _error(409 if e.kind == "conflict" else 404, e.kind, str(e))

    @app.exception_handler(AudioError)
    def _audio_error(_req: Request, e: AudioError) -> JSONResponse:
        if e.reason.startswith("too long"):
            return _error(413, "audio_too_long", str(e))
        return _error(400, "bad_audio", str(e))

    @app.exception_handler(LabelError)
    def _label_error(_req: Request, e: LabelError) -> JSONResponse:
        return _error(422, "unknown_label", str(e))

    @app.exception_handler(ContextLengthError)
    def _context_error(_req: Request, e: ContextLengthError) -> JSONResponse:
        return _error(400, "context_length_exceeded", str(e))

    @app.exception_handler(RequestValidationError)
    def _validation_error(_req: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()]
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, "http_error", str(e.detail), getattr(e, "headers", None))

    # ---- web page
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    # ---- info
    def _speaker_out(s: Speaker) -> SpeakerOut:
        return SpeakerOut(id=s.id, name=s.name, created=s.created, n_enrollments=svc.n_enrolled(s.id))

    def _enrollment_out(e: Enrollment) -> EnrollmentOut:
        return EnrollmentOut(id=e.id, speaker_id=e.speaker_id, label=e.label, sha256=e.sha256, duration=e.duration,
                             created=e.created)

    @app.get("/v1/info", response_model=Info, tags=["service"])
    def info() -> Info:
        """Labels, limits, models and counts."""
        return Info(labels=svc.labels, chat_model=svc.chat.name, echat_model=svc.echat.name if svc.echat else None,
                    bundle=str(settings.bundle),
                    n_speakers=len(svc.store.list_speakers()),
                    n_enrollments=len(svc.loaded_ids()),
                    excluded_enrollments=svc.excluded,
                    limits=Limits(max_upload_mb=settings.max_upload_mb, max_seconds=settings.max_seconds,
                                  min_seconds=settings.min_seconds,
                                  max_enrollments_per_speaker=svc.recognizer.max_enroll))

    @app.get("/v1/models", response_model=ModelList, tags=["chat"])
    def models() -> ModelList:
        """The chat model (OpenAI-compatible listing)."""
        return ModelList(data=[ModelCard(id=svc.chat.name)] + ([ModelCard(id=svc.echat.name)] if svc.echat else []))

    # ---- speakers
    @app.post("/v1/speakers", response_model=SpeakerOut, status_code=201, dependencies=auth, tags=["speakers"],
              responses=_responses(401, 409, 413, 422))
    def create_speaker(body: SpeakerCreate) -> SpeakerOut:
        """Create a speaker (its id is generated unless given)."""
        return _speaker_out(svc.store.create_speaker(body.id, body.name))

    @app.get("/v1/speakers", response_model=SpeakerList, tags=["speakers"])
    def list_speakers() -> SpeakerList:
        return SpeakerList(data=[_speaker_out(s) for s in svc.store.list_speakers()])

    @app.get("/v1/speakers/{speaker_id}", response_model=SpeakerOut, tags=["speakers"], responses=_responses(404))
    def get_speaker(speaker_id: str) -> SpeakerOut:
        return _speaker_out(svc.store.get_speaker(speaker_id))

    @app.delete("/v1/speakers/{speaker_id}", response_model=Deleted, dependencies=auth, tags=["speakers"],
                responses=_responses(401, 404))
    def delete_speaker(speaker_id: str) -> Deleted:
        """Delete a speaker with its enrollments (rows and audio)."""
        return Deleted(id=speaker_id, n_enrollments_deleted=svc.delete_speaker(speaker_id))

    # ---- enrollments
    @app.post("/v1/speakers/{speaker_id}/enrollments", response_model=EnrollmentCreated, status_code=201,
              dependencies=auth, tags=["enrollments"], responses=_responses(400, 401, 404, 409, 413, 422))
    def add_enrollment(speaker_id: str, file: Annotated[UploadFile, File(description="audio (wav, flac, ogg, mp3)")],
                       label: Annotated[str, Form(min_length=1, description="emotion label (see /v1/info)")]
                       ) -> EnrollmentCreated:
        """Enroll one labelled utterance. It is stored (audio file + row) before the answer; its encoding is added
        to the speaker's cache, so predictions never re-encode enrollments."""
        enr = svc.add_enrollment(speaker_id, file.file.read(), label, file.filename or "upload")
        return EnrollmentCreated(**_enrollment_out(enr).model_dump(), n_enrollments=svc.n_enrolled(speaker_id))

    @app.get("/v1/speakers/{speaker_id}/enrollments", response_model=EnrollmentList, tags=["enrollments"],
             responses=_responses(404))
    def list_enrollments(speaker_id: str) -> EnrollmentList:
        """The speaker's enrollments in use, oldest first (rows excluded at start-up are not listed)."""
        svc.store.get_speaker(speaker_id)
        loaded = svc.loaded_ids(speaker_id)
        rows = svc.store.list_enrollments(speaker_id)
        return EnrollmentList(data=[_enrollment_out(e) for e in rows if e.id in loaded])

    @app.delete("/v1/speakers/{speaker_id}/enrollments/{enrollment_id}", response_model=Deleted, dependencies=auth,
                tags=["enrollments"], responses=_responses(401, 404))
    def delete_enrollment(speaker_id: str, enrollment_id: str) -> Deleted:
        svc.delete_enrollment(speaker_id, enrollment_id)
        return Deleted(id=enrollment_id, n_enrollments_deleted=1)

    # ---- recognition
    @app.post("/v1/emotion", response_model=EmotionResult, dependencies=auth, tags=["emotion"],
              responses=_responses(400, 401, 404, 413, 422))
    def recognise(file: Annotated[UploadFile, File(description="audio (wav, flac, ogg, mp3)")],
                  speaker_id: Annotated[str | None, Form()] = None) -> EmotionResult:
        """The emotion of an utterance: personalised (k-shot) when the speaker has enrollments, else 0-shot."""
        t0 = time.perf_counter()
        wave = svc.decode(file.file.read(), file.filename or "upload")
        pred = svc.predict(wave, speaker_id or None)
        return EmotionResult(label=pred.label, probabilities=pred.probs, speaker_id=speaker_id or None,
                             mode="personalised" if pred.n_enroll else "0-shot", n_enrollments_used=pred.n_enroll,
                             latency_ms=(time.perf_counter() - t0) * 1000, model_latency_ms=pred.latency_ms)

    # ---- chat
    @app.post("/v1/chat/completions", response_model=ChatCompletion, dependencies=auth, tags=["chat"],
              responses={**_responses(400, 401, 413, 422),
                         200: {"content": {"text/event-stream": {}}, "description": "with stream=true: SSE chunks"}})
    def chat_completions(req: ChatCompletionRequest):
        """OpenAI-compatible chat; the reply takes the emotion recognised in the last user turn's audio into
        account (personalised when ``user`` is an enrolled speaker)."""
        emotion = wave = None
        audio = last_user_audio(req.messages)
        if audio is not None:
            try:
                data = base64.b64decode(audio.data, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "bad_audio", "input_audio.data is not valid base64") from None
            known = req.user is not None and svc.store.has_speaker(req.user)
            wave = svc.decode(data, f"input_audio.{audio.format}")
            pred = svc.predict(wave, req.user if known else None)
            emotion = EmotionInfo(label=pred.label, probabilities=pred.probs, n_enrollments_used=pred.n_enroll,
                                  speaker_id=req.user if known else None)
        max_tokens = req.max_completion_tokens or req.max_tokens
        if wave is not None and svc.echat is not None:
            # E-chat answers from the audio; the reported emotion stays the (personalised) SER's
            reply, emotion.echat_emotion = svc.echat.reply_audio(wave, max_tokens)
            backend = svc.echat.name
        else:
            temperature = req.temperature if req.temperature is not None else 0.0
            reply = svc.chat.reply(conversation_text(req.messages), emotion, max_tokens, temperature)
            backend = svc.chat.name
        if emotion is not None:
            emotion.backend = backend
        completion = ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}", created=int(time.time()), model=backend,
            choices=[Choice(message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason)],
            usage=Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                        total_tokens=reply.prompt_tokens + reply.completion_tokens),
            emotion=emotion)
        if req.stream:
            return StreamingResponse(_sse(completion), media_type="text/event-stream")
        return completion

    return app


def _sse(c: ChatCompletion) -> Iterator[str]:
    """A finished completion as OpenAI ``chat.completion.chunk`` server-sent events."""
    base = {"id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model}
    choice = c.choices[0]
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": choice.message.content},
                                  "finish_reason": None}]}
    if c.emotion is not None:
        first["emotion"] = c.emotion.model_dump()
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.finish_reason}],
            "usage": c.usage.model_dump()}
    for chunk in (first, last):
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"
