"""The wire contract of the team server, imported by the server (remote/app.py) and the client
(remote/client.py, used by the language server's remote backend). Pydantic only: no torch.

Two APIs:
- the seed's: POST /complete {code, max_tokens, temperature, top_k, suffix?} → {completion, full_code};
- OpenAI's legacy completions: POST /v1/completions, GET /v1/models, with two of vLLM's
  extensions that editors need: `truncate_prompt_tokens` (-1 = keep the text nearest the
  cursor that fits the context) and `ignore_eos`; and two of ours, which other OpenAI-compatible
  servers ignore as unknown fields (our client sends them to our server only): `healed_prefix`
  (the text at the end of the prompt that the language server's prompt builder healed) and
  `dedent_line_prefix` (BLOCK mode's dedent stop, so a block ends as it is decoded).
Errors have OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# -- the seed's API ---------------------------------------------------------------------------


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="the code before the cursor")
    max_tokens: int = Field(100, ge=1, description="the most new tokens")
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    top_k: int = Field(50, ge=0, le=50304)
    suffix: str = Field("", description="the code after the cursor (fill-in-the-middle)")


class CompleteResponse(BaseModel):
    completion: str
    full_code: str


class RootResponse(BaseModel):
    service: str
    status: str
    version: str


class HealthResponse(BaseModel):
    status: str
    gpu_available: bool
    model_loaded: bool


# -- OpenAI-compatible completions --------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(BaseModel):
    # unknown fields are ignored, as clients send more than we use; known but unsupported
    # features (echo, logprobs, best_of, penalties) are refused by name in the app
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    ignore_eos: bool = False
    # our extension: the end of `prompt` that the client's token healing took off (it is still in
    # `prompt`); the server backs the prompt off by it and the completion must begin with it
    healed_prefix: str | None = None
    # our extension: BLOCK mode's dedent stop (model/stops.py), the cursor's line before the cursor;
    # the completion ends at a line indented less than the block it starts in, as it is decoded
    dedent_line_prefix: str | None = Field(None, max_length=4096)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: FinishReason | None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens served from the prefix cache, as OpenAI reports them


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "codeassist"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
