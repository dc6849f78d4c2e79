"""The HTTP API of the emotion-aware voice service (FastAPI); its OpenAPI spec is served at ``/openapi.json``.

Every ``/v1`` request needs an API key (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``), reads included
unless the server runs with ``--public-read``; ``/health``, ``/ready``, the web page and the spec need none. A key
sees and changes only the speakers it created (an admin key, ``emoslm apikey create NAME --admin``, all of them);
with ``--rate-limit N/min`` each key has a token bucket. Errors are JSON: ``{"error": {"type": ..., "message":
..., "request_id": ...}}`` with 400 (bad audio, invalid text, prompt too long), 401 (missing or wrong key), 404
(unknown speaker or enrollment, or one of another key), 409 (speaker exists, enrollment limit), 413 (request body
or audio too long), 422 (unknown label, malformed request), 429 (rate limit, with Retry-After), 501 (speech
recognition off). Every response carries ``X-Request-ID`` (the client's, or a generated one).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, AsyncIterator, Literal

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from emoslm.errors import AudioError, EmoslmError, LabelError
from emoslm.service.asr import Transcript
from emoslm.service.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ContextLengthError,
    EmotionInfo,
    ReplyStream,
    SegmentEmotion,
    StreamingLLMChatBackend,
    Usage,
    audio_bytes,
    conversation_text,
    last_user_audio,
    prompt_chars,
)
from emoslm.service.core import Recognition, Service, Settings
from emoslm.service.http import (
    ApiError,
    BodyLimit,
    JSONCORSMiddleware,
    RequestContext,
    StrictRoute,
    error_body,
    error_response,
    validation_message,
)
from emoslm.service.store import Enrollment, Speaker, StoreError

log = logging.getLogger("emoslm.service")

WEB_DIR = Path(__file__).parent / "web"
#: E-chat answers spoken turns up to this long (what it was trained on); longer ones go through ASR + the LLM
ECHAT_MAX_SECONDS = 30.0
SPEAKER_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# ------------------------------------------------------------------------------------------ schemas


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None = None


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
    owner: str | None = Field(default=None, description="the API key that created it (None: admin keys only)")


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
    label: str | None = Field(description="the most probable emotion; null when the recognition abstained")
    probabilities: dict[str, float]
    confidence: float = Field(description="the largest probability")
    abstained: bool = Field(default=False, description="the confidence was below min_confidence (the request's, "
                            "else the server's --min-confidence): no label")
    calibrated: bool = Field(default=False, description="the probabilities are temperature-scaled (the bundle "
                             "has calibration.json, from emoslm calibrate)")
    speaker_id: str | None
    mode: str = Field(description="'personalised' (k-shot with the speaker's enrollments) or '0-shot'")
    n_enrollments_used: int
    latency_ms: float = Field(description="server time for this request: audio decoding + recognition (+ ASR)")
    model_latency_ms: float
    duration: float = Field(default=0.0, description="seconds of audio")
    segments: list[SegmentEmotion] | None = Field(
        default=None, description="audio longer than one window: the emotion of each segment (start/end in "
        "seconds); the top-level label and probabilities are their duration-weighted mean")
    transcript: str | None = Field(default=None, description="the words (with transcribe=true)")


class TranscriptSegmentOut(BaseModel):
    id: int
    start: float
    end: float
    text: str


class TranscriptionOut(BaseModel):
    """OpenAI's transcription object (``text``; ``verbose_json`` adds language, duration and segments) with the
    recognised emotion."""

    text: str
    emotion: EmotionResult
    task: str | None = None
    language: str | None = None
    duration: float | None = None
    segments: list[TranscriptSegmentOut] | None = None


class Limits(BaseModel):
    max_upload_mb: float
    max_seconds: float
    min_seconds: float
    window_seconds: float
    max_enrollments_per_speaker: int
    max_prompt_chars: int
    rate_limit_per_minute: float | None


class Info(BaseModel):
    status: str = "ok"
    labels: list[str]
    chat_model: str
    echat_model: str | None = Field(default=None, description="E-chat, answering turns with audio (--echat)")
    asr_model: str | None = Field(default=None, description="speech recognition (--asr); None: off")
    bundle: str
    key: str | None = Field(default=None, description="the name of the API key used (None: public read)")
    admin: bool = Field(default=False, description="whether that key sees every speaker")
    n_speakers: int = Field(description="speakers this key sees")
    n_enrollments: int = Field(description="their enrollments in use")
    excluded_enrollments: dict[str, str] = Field(description="rows left out at start-up (file missing or altered); "
                                                 "admin keys only")
    limits: Limits


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "emoslm"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str = "ok"


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    models: dict[str, str | None] = Field(description="each model and its state")
    database: str


def _responses(*codes: int) -> dict[int | str, dict]:
    return {c: {"model": ErrorBody} for c in codes}


# ------------------------------------------------------------------------------------------ API keys

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token (what the openai client sends)")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


@dataclass(frozen=True)
class Principal:
    """Who is asking: an API key (by name; admin or not), or nobody (a public read, which sees everything)."""

    name: str | None
    admin: bool = False

    def owns(self, spk: Speaker) -> bool:
        return self.admin or self.name is None or spk.owner == self.name

    @property
    def owner_filter(self) -> str | None:
        """The owner to list speakers of (None: all)."""
        return None if self.admin or self.name is None else self.name


def _given_key(cred: HTTPAuthorizationCredentials | None, key: str | None) -> str | None:
    return key or (cred.credentials if cred else None)


def _authenticate(svc: Service, given: str | None) -> Principal:
    if not given:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer KEY or X-API-Key); "
                       "create one with: emoslm apikey create NAME", {"WWW-Authenticate": "Bearer"})
    found = svc.store.find_api_key(given)
    if found is None:
        raise ApiError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})
    if svc.rate_limiter is not None:
        svc.rate_limiter.check(f"key:{found.name}")
    return Principal(found.name, found.admin)


def require_key(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                key: Annotated[str | None, Security(_header_key)]) -> Principal:
    """The request's valid API key; 401 when it has none or a wrong one, 429 over its rate limit."""
    return _authenticate(request.app.state.service, _given_key(cred, key))


def read_access(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                key: Annotated[str | None, Security(_header_key)]) -> Principal:
    """A read: needs a key, unless the server runs with ``--public-read`` and none is given."""
    svc: Service = request.app.state.service
    given = _given_key(cred, key)
    if not given and svc.settings.public_read:
        if svc.rate_limiter is not None:
            svc.rate_limiter.check(f"ip:{request.client.host if request.client else '-'}")
        return Principal(None)
    return _authenticate(svc, given)


Caller = Annotated[Principal, Depends(require_key)]
Reader = Annotated[Principal, Depends(read_access)]


# ------------------------------------------------------------------------------------------ the app


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app of a service (loads the model bundle, the store and the chat LLM; the ASR on first use)."""
    svc = Service(settings)
    app = FastAPI(title="emoslm voice service", version="2",
                  description="Personalised speech emotion recognition, speech recognition and emotion-aware chat. "
                  + __doc__.split("\n\n")[1])
    app.router.route_class = StrictRoute
    app.state.service = svc
    # outermost first: request id + access log, CORS (preflights answered before the body limit), body limit
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(JSONCORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
    app.add_middleware(RequestContext)

    # ---- errors (all JSON)
    @app.exception_handler(ApiError)
    def _api_error(_req: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.type, e.message, e.headers)

    @app.exception_handler(StoreError)
    def _store_error(_req: Request, e: StoreError) -> JSONResponse:
        return error_response(409 if e.kind == "conflict" else 404, e.kind, str(e))

    @app.exception_handler(AudioError)
    def _audio_error(_req: Request, e: AudioError) -> JSONResponse:
        if e.reason.startswith("too long"):
            return error_response(413, "audio_too_long", str(e))
        return error_response(400, "bad_audio", str(e))

    @app.exception_handler(LabelError)
    def _label_error(_req: Request, e: LabelError) -> JSONResponse:
        return error_response(422, "unknown_label", str(e))

    @app.exception_handler(ContextLengthError)
    def _context_error(_req: Request, e: ContextLengthError) -> JSONResponse:
        return error_response(400, "context_length_exceeded", str(e))

    @app.exception_handler(RequestValidationError)
    def _validation_error(_req: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, "http_error", str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(EmoslmError)
    def _emoslm_error(_req: Request, e: EmoslmError) -> JSONResponse:
        log.error("request failed: %s", e)
        return error_response(500, "server_error", str(e))

    # ---- web page, liveness, readiness
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness: the process answers (no key needed)."""
        return Health()

    @app.get("/ready", response_model=Ready, tags=["service"], responses=_responses(503))
    def ready():
        """Readiness: the models are loaded and the database answers (no key needed). The ASR loads on first use:
        ``asr`` is ``on first use`` until then."""
        try:
            svc.store.ping()
            database = "ok"
        except Exception as e:  # noqa: BLE001 - any database failure means not ready
            database = f"error: {type(e).__name__}"
        models = {"ser": "loaded", "chat": svc.chat.name, "echat": svc.echat.name if svc.echat else None,
                  "asr": None if not svc.asr.enabled else (svc.asr.name if svc.asr.loaded else
                                                           f"{svc.asr.name} (on first use)")}
        body = Ready(status="ready" if database == "ok" else "not_ready", models=models, database=database)
        return body if database == "ok" else JSONResponse(body.model_dump(), status_code=503)

    # ---- helpers
    def _speaker(me: Principal, speaker_id: str) -> Speaker:
        """The speaker if this caller may see it; 404 otherwise (another key's speaker is not revealed)."""
        spk = svc.store.get_speaker(speaker_id)
        if not me.owns(spk):
            raise StoreError("unknown_speaker", f"unknown speaker {speaker_id!r}")
        return spk

    def _optional_speaker(me: Principal, speaker_id: str | None) -> str | None:
        """A form's speaker field: None when empty, else the id of a speaker this caller sees (404 otherwise)."""
        if not speaker_id:
            return None
        return _speaker(me, speaker_id).id

    def _speaker_out(s: Speaker) -> SpeakerOut:
        return SpeakerOut(id=s.id, name=s.name, created=s.created, n_enrollments=svc.n_enrolled(s.id), owner=s.owner)

    def _enrollment_out(e: Enrollment) -> EnrollmentOut:
        return EnrollmentOut(id=e.id, speaker_id=e.speaker_id, label=e.label, sha256=e.sha256, duration=e.duration,
                             created=e.created)

    def _emotion_result(rec: Recognition, speaker_id: str | None, t0: float, transcript: str | None = None
                        ) -> EmotionResult:
        return EmotionResult(label=rec.label, probabilities=rec.probs, confidence=rec.confidence,
                             abstained=rec.abstained, calibrated=rec.calibrated, speaker_id=speaker_id,
                             mode="personalised" if rec.n_enroll else "0-shot", n_enrollments_used=rec.n_enroll,
                             latency_ms=(time.perf_counter() - t0) * 1000, model_latency_ms=rec.latency_ms,
                             duration=rec.duration, segments=_segments(rec), transcript=transcript)

    def _transcribe(wave) -> Transcript:
        if not svc.asr.enabled:
            raise ApiError(501, "asr_disabled", "speech recognition is off on this server (emoslm serve --asr none)")
        return svc.asr.transcribe(wave)

    # ---- info
    @app.get("/v1/info", response_model=Info, tags=["service"], responses=_responses(401, 429))
    def info(me: Reader) -> Info:
        """Labels, limits, models, and the counts of what this key sees."""
        speakers = svc.store.list_speakers(me.owner_filter)
        return Info(labels=svc.labels, chat_model=svc.chat.name, echat_model=svc.echat.name if svc.echat else None,
                    asr_model=svc.asr.name if svc.asr.enabled else None, bundle=str(settings.bundle),
                    key=me.name, admin=me.admin,
                    n_speakers=len(speakers), n_enrollments=sum(svc.n_enrolled(s.id) for s in speakers),
                    excluded_enrollments=svc.excluded if me.admin or me.name is None else {},
                    limits=Limits(max_upload_mb=settings.max_upload_mb, max_seconds=settings.max_seconds,
                                  min_seconds=settings.min_seconds, window_seconds=settings.window_seconds,
                                  max_enrollments_per_speaker=svc.recognizer.max_enroll,
                                  max_prompt_chars=settings.max_prompt_chars,
                                  rate_limit_per_minute=svc.rate_limiter.per_minute if svc.rate_limiter else None))

    @app.get("/v1/models", response_model=ModelList, tags=["chat"], responses=_responses(401, 429))
    def models(_me: Reader) -> ModelList:
        """The chat model (OpenAI-compatible listing)."""
        return ModelList(data=[ModelCard(id=svc.chat.name)] + ([ModelCard(id=svc.echat.name)] if svc.echat else []))

    # ---- speakers
    @app.post("/v1/speakers", response_model=SpeakerOut, status_code=201, tags=["speakers"],
              responses=_responses(400, 401, 409, 413, 422, 429))
    def create_speaker(body: SpeakerCreate, me: Caller) -> SpeakerOut:
        """Create a speaker owned by this key (its id is generated unless given)."""
        return _speaker_out(svc.store.create_speaker(body.id, body.name, owner=me.name))

    @app.get("/v1/speakers", response_model=SpeakerList, tags=["speakers"], responses=_responses(401, 429))
    def list_speakers(me: Reader) -> SpeakerList:
        """The speakers of this key (an admin key: all)."""
        return SpeakerList(data=[_speaker_out(s) for s in svc.store.list_speakers(me.owner_filter)])

    @app.get("/v1/speakers/{speaker_id}", response_model=SpeakerOut, tags=["speakers"],
             responses=_responses(401, 404, 429))
    def get_speaker(speaker_id: str, me: Reader) -> SpeakerOut:
        return _speaker_out(_speaker(me, speaker_id))

    @app.delete("/v1/speakers/{speaker_id}", response_model=Deleted, tags=["speakers"],
                responses=_responses(401, 404, 429))
    def delete_speaker(speaker_id: str, me: Caller) -> Deleted:
        """Delete a speaker with its enrollments (rows and audio)."""
        _speaker(me, speaker_id)
        return Deleted(id=speaker_id, n_enrollments_deleted=svc.delete_speaker(speaker_id))

    # ---- enrollments
    @app.post("/v1/speakers/{speaker_id}/enrollments", response_model=EnrollmentCreated, status_code=201,
              tags=["enrollments"], responses=_responses(400, 401, 404, 409, 413, 422, 429))
    def add_enrollment(speaker_id: str, me: Caller,
                       file: Annotated[UploadFile, File(description="audio (wav, flac, ogg, mp3)")],
                       label: Annotated[str, Form(min_length=1, description="emotion label (see /v1/info)")]
                       ) -> EnrollmentCreated:
        """Enroll one labelled utterance. It is stored (audio file + row) before the answer; its encoding is added
        to the speaker's cache, so predictions never re-encode enrollments."""
        _speaker(me, speaker_id)
        enr = svc.add_enrollment(speaker_id, file.file.read(), label, file.filename or "upload")
        return EnrollmentCreated(**_enrollment_out(enr).model_dump(), n_enrollments=svc.n_enrolled(speaker_id))

    @app.get("/v1/speakers/{speaker_id}/enrollments", response_model=EnrollmentList, tags=["enrollments"],
             responses=_responses(401, 404, 429))
    def list_enrollments(speaker_id: str, me: Reader) -> EnrollmentList:
        """The speaker's enrollments in use, oldest first (rows excluded at start-up are not listed)."""
        _speaker(me, speaker_id)
        loaded = svc.loaded_ids(speaker_id)
        rows = svc.store.list_enrollments(speaker_id)
        return EnrollmentList(data=[_enrollment_out(e) for e in rows if e.id in loaded])

    @app.delete("/v1/speakers/{speaker_id}/enrollments/{enrollment_id}", response_model=Deleted,
                tags=["enrollments"], responses=_responses(401, 404, 429))
    def delete_enrollment(speaker_id: str, enrollment_id: str, me: Caller) -> Deleted:
        _speaker(me, speaker_id)
        svc.delete_enrollment(speaker_id, enrollment_id)
        return Deleted(id=enrollment_id, n_enrollments_deleted=1)

    # ---- recognition
    @app.post("/v1/emotion", response_model=EmotionResult, tags=["emotion"],
              responses=_responses(400, 401, 404, 413, 422, 429, 501))
    def recognise(me: Caller, file: Annotated[UploadFile, File(description="audio (wav, flac, ogg, mp3)")],
                  speaker_id: Annotated[str | None, Form()] = None,
                  transcribe: Annotated[bool, Form(description="also return the words (Whisper)")] = False,
                  min_confidence: Annotated[float | None, Form(
                      ge=0.0, le=1.0, description="abstain (label null, abstained true) when the confidence is "
                      "below this; default: the server's --min-confidence (none: never)")] = None
                  ) -> EmotionResult:
        """The emotion of an utterance: personalised (k-shot) when the speaker has enrollments, else 0-shot; per
        segment for audio longer than one window. With ``transcribe=true`` also its words; with
        ``min_confidence`` no label when the recognition is less sure than that."""
        t0 = time.perf_counter()
        speaker_id = _optional_speaker(me, speaker_id)
        wave = svc.decode(file.file.read(), file.filename or "upload")
        rec = svc.recognise(wave, speaker_id, min_confidence)
        transcript = _transcribe(wave).text if transcribe else None
        return _emotion_result(rec, speaker_id, t0, transcript)

    @app.post("/v1/audio/transcriptions", response_model=TranscriptionOut, tags=["emotion"],
              responses={**_responses(400, 401, 404, 413, 422, 429, 501),
                         200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                               "description": "JSON, or the bare text with response_format=text"}})
    def transcriptions(me: Caller, file: Annotated[UploadFile, File(description="audio (wav, flac, ogg, mp3)")],
                       model: Annotated[str, Form(description="any name (the server's --asr model answers)")] = "",
                       response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json",
                       speaker_id: Annotated[str | None, Form(description="personalises the emotion")] = None):
        """OpenAI-compatible speech to text (``client.audio.transcriptions.create``), with the emotion of the
        audio: ``{"text": ..., "emotion": {...}}``."""
        t0 = time.perf_counter()
        speaker_id = _optional_speaker(me, speaker_id)
        wave = svc.decode(file.file.read(), file.filename or "upload")
        tr = _transcribe(wave)
        if response_format == "text":
            return PlainTextResponse(tr.text)
        emotion = _emotion_result(svc.recognise(wave, speaker_id), speaker_id, t0, tr.text)
        out = {"text": tr.text, "emotion": emotion.model_dump()}
        if response_format == "verbose_json":
            out.update(task="transcribe", language=tr.language, duration=round(tr.duration, 3),
                       segments=[{"id": i, "start": s.start, "end": s.end, "text": s.text}
                                 for i, s in enumerate(tr.segments)])
        return JSONResponse(out)

    # ---- chat
    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["chat"],
              responses={**_responses(400, 401, 404, 413, 422, 429),
                         200: {"content": {"text/event-stream": {}}, "description": "with stream=true: SSE chunks"}})
    def chat_completions(req: ChatCompletionRequest, me: Caller):
        """OpenAI-compatible chat. The last user turn's audio is transcribed (its words go to the LLM in place of
        the audio) and its emotion recognised (personalised when ``user`` is a speaker of this key); the reply
        takes both into account. ``stream=true`` sends the tokens as they are generated."""
        n_chars = prompt_chars(req.messages)
        if n_chars > settings.max_prompt_chars:
            raise ApiError(400, "context_length_exceeded", f"the messages hold {n_chars} characters of text; the "
                           f"limit is {settings.max_prompt_chars}")
        if req.user is not None:
            _speaker(me, req.user)
        emotion = wave = transcript = None
        part = last_user_audio(req.messages)
        if part is not None:
            data, name = audio_bytes(part)
            wave = svc.decode(data, name)
            rec = svc.recognise(wave, req.user)
            emotion = EmotionInfo(label=rec.label, probabilities=rec.probs, n_enrollments_used=rec.n_enroll,
                                  speaker_id=req.user, segments=_segments(rec), abstained=rec.abstained)
        # an emotion the recognizer abstained on is not put to the LLM: it answers the words alone
        cue = emotion if emotion is not None and not emotion.abstained else None
        max_tokens = req.max_completion_tokens or req.max_tokens
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time())}
        if wave is not None and svc.echat is not None and len(wave) <= ECHAT_MAX_SECONDS * 16000:
            # E-chat answers from the audio; the reported emotion stays the (personalised) SER's
            reply, emotion.echat_emotion = svc.echat.reply_audio(wave, max_tokens)
            backend = svc.echat.name
        else:
            if wave is not None and svc.asr.enabled:
                transcript = svc.asr.transcribe(wave).text
            messages = conversation_text(req.messages, transcript)
            temperature = req.temperature if req.temperature is not None else 0.0
            backend = svc.chat.name
            if emotion is not None:
                emotion.backend = backend
            if req.stream and isinstance(svc.chat, StreamingLLMChatBackend):
                stream = svc.chat.stream(messages, cue, max_tokens, temperature)  # context checked here
                return StreamingResponse(_sse_stream({**head, "model": backend}, stream, emotion, transcript),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            reply = svc.chat.reply(messages, cue, max_tokens, temperature)
        if emotion is not None:
            emotion.backend = backend
        completion = ChatCompletion(
            **head, model=backend,
            choices=[Choice(message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason)],
            usage=Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                        total_tokens=reply.prompt_tokens + reply.completion_tokens),
            emotion=emotion, transcript=transcript)
        if req.stream:
            return StreamingResponse(_sse(completion), media_type="text/event-stream")
        return completion

    return app


def _segments(rec: Recognition) -> list[SegmentEmotion] | None:
    if rec.segments is None:
        return None
    return [SegmentEmotion(start=s.start, end=s.end, label=s.label, probabilities=s.probs, confidence=s.confidence,
                           abstained=s.abstained) for s in rec.segments]


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _first_chunk(base: dict, content: str, emotion: EmotionInfo | None, transcript: str | None) -> dict:
    """The first ``chat.completion.chunk``: the role, ``content``, and the emotion and transcript when known."""
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                  "finish_reason": None}]}
    if emotion is not None:
        first["emotion"] = emotion.model_dump()
    if transcript is not None:
        first["transcript"] = transcript
    return first


def _last_chunk(base: dict, finish_reason: str, usage: dict) -> dict:
    return {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}], "usage": usage}


def _sse(c: ChatCompletion):
    """A finished completion as OpenAI ``chat.completion.chunk`` server-sent events (E-chat's replies)."""
    base = {"id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model}
    choice = c.choices[0]
    yield _event(_first_chunk(base, choice.message.content, c.emotion, c.transcript))
    yield _event(_last_chunk(base, choice.finish_reason, c.usage.model_dump()))
    yield "data: [DONE]\n\n"


async def _sse_stream(head: dict, stream: ReplyStream, emotion: EmotionInfo | None, transcript: str | None
                      ) -> AsyncIterator[str]:
    """The LLM's reply as it is generated: a first chunk with the role (and the emotion and transcript), one
    chunk per piece of text, a last one with the finish reason and usage. An error after the first chunk can
    only be reported in the stream: a JSON ``error`` event."""
    base = {"object": "chat.completion.chunk", **head}
    yield _event(_first_chunk(base, "", emotion, transcript))
    try:
        async for piece in iterate_in_threadpool(iter(stream)):
            yield _event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        r = stream.reply
        yield _event(_last_chunk(base, r.finish_reason, {
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}))
        yield "data: [DONE]\n\n"
    except Exception:
        log.exception("chat stream failed")
        yield _event(error_body("internal_error", "the reply failed while it was streamed; the server log has the "
                                "details"))
    finally:
        stream.close()
