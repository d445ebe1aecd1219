"""The engine runtime: one thread per model, fed through an inbox (`worker.Worker`). The text
engines run their decode loops on it (`generation.GenerationRuntime`), the embedding and rerank
models their micro-batches (`batcher.MicroBatcher`)."""

from homeport.engines.runtime.batcher import MicroBatcher
from homeport.engines.runtime.generation import (
    GenerationCounters,
    GenerationJob,
    GenerationRuntime,
    RuntimeEngine,
)
from homeport.engines.runtime.worker import Job, Worker

__all__ = ["GenerationCounters", "GenerationJob", "GenerationRuntime", "Job", "MicroBatcher", "RuntimeEngine", "Worker"]
