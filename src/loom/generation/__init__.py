"""Generation: N continuations of a node from one or more models, written back as its children.

`loom.agenerate(doc_or_path, GenerationRequest, events)` is the one core (async);
`loom.generate` runs it to completion for synchronous callers. Inside: `context`
(what the model continues), `request` (what was asked), `plan` (one Branch per child:
parameters, modulation, emulation framing), `engine` (requests run concurrently,
streamed as `events`), `record` (what each node records), `core` (the whole flow and
the write), `recovery` (texts saved when the write fails), `backends` (the providers).
This package's own import is free: nothing is loaded until a submodule is used.
"""
