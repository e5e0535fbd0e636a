"""`loom gen` end to end: the CLI as a subprocess, a real local HTTP server as the provider."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KEY, Loom
from fakeprovider import Fail, FakeProvider, Reply


def gen(loom: Loom, *args: str, ok: bool = True) -> object:
    result = loom("gen", *args, "--fields", "all", env=loom.env)  # type: ignore[attr-defined]
    if ok:
        assert result.code == 0, result.stderr
        return result.json()
    return result


def test_base_model_children_share_one_request_with_n(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Reply([" there was", " a fox"], finish_reason="stop"))
    made = gen(woven, "-n", "2", "--max-tokens", "16", "--temperature", "0.7", "--seed", "3")
    nodes = made["nodes"]  # type: ignore[index]
    assert [n["text"] for n in nodes] == [" there was", " a fox"]
    assert len(fake_provider.requests) == 1
    body = fake_provider.requests[0].body
    assert body["prompt"] == "Once upon a time" and body["n"] == 2 and body["stream"] is True
    assert body["temperature"] == 0.7 and body["max_tokens"] == 16 and body["seed"] == 3
    gen_record = nodes[0]["meta"]["gen"]
    assert gen_record["model"] == "base" and gen_record["model_id"] == "base-1"
    assert gen_record["sent"]["temperature"] == 0.7
    assert gen_record["finish_reason"] == "stop"
    assert gen_record["prompt"]["chars"] == len("Once upon a time")
    assert gen_record["usage"]["shared_by"] == 2
    assert gen_record["request"] == {"n": 2, "index": 0}
    assert {"latency_ms", "ttft_ms", "base_url", "backend"} <= gen_record.keys()
    probs = nodes[0]["meta"]["logprobs"]
    assert "".join(probs["tokens"]) == " there was" and all(lp <= 0 for lp in probs["lp"])
    assert nodes[0]["kind"] == "model" and nodes[0]["visited"] is False
    # The document on disk has them as children of the root, and never the key.
    text = (woven.cwd / "s.loom.json").read_text()
    assert KEY not in text
    assert woven.ok("ls", "--fields", "all").json()["nodes"][1]["text"] == " a fox"


def test_chat_and_anthropic_models_and_several_m(woven: Loom, fake_provider: FakeProvider) -> None:
    made = gen(woven, "-m", "chat", "-m", "claude", "-n", "2", "--max-tokens", "8")
    nodes = made["nodes"]  # type: ignore[index]
    assert len(nodes) == 4
    assert [n["meta"]["gen"]["model"] for n in nodes] == ["chat", "chat", "claude", "claude"]
    paths = sorted(r.path for r in fake_provider.requests)
    assert paths.count("/v1/messages") == 2  # Anthropic has no n: one request per branch
    assert paths.count("/v1/chat/completions") == 1
    claude_bodies = [r.body for r in fake_provider.requests if r.path == "/v1/messages"]
    assert all(
        b["max_tokens"] == 8 and b["messages"][-1]["role"] in ("user", "assistant")
        for b in claude_bodies
    )


def test_raw_output_is_just_the_texts(woven: Loom, fake_provider: FakeProvider) -> None:
    fake_provider.script(Reply([" alpha", " beta"], finish_reason="stop"))
    result = woven("gen", "-n", "2", "--raw", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 0 and result.stdout == " alpha\n\n beta"


def test_retry_after_5xx_then_success(woven: Loom, fake_provider: FakeProvider) -> None:
    fake_provider.script(Fail(503), Reply([" ok"], finish_reason="stop"))
    made = gen(woven, "-n", "1")
    assert [n["text"] for n in made["nodes"]] == [" ok"]  # type: ignore[index]
    assert len(fake_provider.requests) == 2


def test_bad_key_is_one_line_without_the_key_and_document_untouched(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    before = (woven.cwd / "s.loom.json").read_bytes()
    result = woven("gen", "-n", "2", env={"FAKE_KEY": "sk-wrong-key-999"})
    assert result.code == 1
    assert result.stderr.count("\n") == 1 and "401" in result.stderr
    assert "sk-wrong-key-999" not in result.stderr
    assert (woven.cwd / "s.loom.json").read_bytes() == before
    as_json = woven("gen", "--fields", "all", env={"FAKE_KEY": "sk-wrong-key-999"})
    assert json.loads(as_json.stdout)["error"]["code"] == "backend"


def test_missing_key_and_unknown_model(woven: Loom) -> None:
    result = woven("gen", "-m", "anthropic:claude-x", env={"ANTHROPIC_API_KEY": ""})
    assert result.code == 1 and "$ANTHROPIC_API_KEY is not set" in result.stderr
    result = woven("gen", "-m", "nope", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1 and "unknown model 'nope'" in result.stderr


def test_stream_cut_keeps_the_text_marked_incomplete(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Reply([" one two three four"], cut_after=2))
    result = woven("gen", "-n", "1", "--fields", "all", env=woven.env)  # type: ignore[attr-defined]
    message = json.loads(result.stdout)["error"]["message"]
    assert (
        result.code == 1
        and "cut off (text kept, marked incomplete)" in message
        and "lost mid-response" in message
    )
    kids = woven.ok("ls", "--fields", "all").json()["nodes"]
    assert len(kids) == 1 and kids[0]["meta"]["incomplete"] is True
    assert kids[0]["text"] and " one two three four".startswith(kids[0]["text"])


def test_partial_failure_saves_the_successes(woven: Loom, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        Reply([" good"], finish_reason="stop"), Fail(400, message="bad request for claude")
    )
    result = woven("gen", "-m", "base", "-m", "claude", "-n", "1", "--fields", "all", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1
    error = json.loads(result.stdout)["error"]
    assert "1 of 2 branch(es) failed" in error["message"]
    [created] = error["details"]["nodes"]  # the node itself, not only its id
    assert created["text"] == " good" and created["parent"] and created["meta"]["gen"]["model"]
    assert [c["text"] for c in woven.ok("ls", "--fields", "all").json()["nodes"]] == [" good"]


def test_cursor_option(woven: Loom, fake_provider: FakeProvider) -> None:
    made = gen(woven, "-n", "2", "--cursor", "last")
    assert woven.ok("info", "--json").json()["cursor"] == made["nodes"][1]["id"]  # type: ignore[index]


def test_concurrent_edit_during_generation_is_kept(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    """The lock is not held while models run; children are written on a fresh read."""
    fake_provider.latency = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", "gen", "-n", "1", "--fields", "all"],
        cwd=woven.cwd,
        env={**os.environ, **woven.env},  # type: ignore[attr-defined]
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not fake_provider.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    woven.ok("bookmark", "--title", "set while generating")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = json.loads(woven.ok("show", "--json").stdout)
    assert data["node"]["bookmark"] == {"title": "set while generating"}
    assert len(data["node"]["children"]) == 1


def interrupt_gen(
    woven: Loom, fake_provider: FakeProvider, *extra: str, signum: int = signal.SIGINT
) -> tuple[int, str, str]:
    """Run `loom gen` on two branches, one slow, and signal it once the fast one is done."""
    # A model without `n`: one request per branch, so one can finish while the other streams.
    models_toml = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models_toml.write_text(
        models_toml.read_text()
        + f'\n[models.single]\nprovider = "openai"\nbase_url = "{fake_provider.openai_url}"\nmodel = "m"\n'
        + 'key_env = "FAKE_KEY"\n[models.single.options.capabilities]\nn = false\n'
    )
    fake_provider.script(
        Reply([" fast and done"], finish_reason="stop"),
        Reply([" slow " * 50], chunk_delay=0.2, finish_reason="stop"),
    )
    proc = woven.start("gen", "-n", "2", "-m", "single", "--concurrency", "2", *extra)
    deadline = time.monotonic() + 30
    while not (fake_provider.answered >= 1 and len(fake_provider.requests) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None, "the branches never started"
        time.sleep(0.02)
    time.sleep(0.3)  # the fast branch's last bytes reach loom
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("keep_partial", [False, True])
def test_ctrl_c_keeps_finished_branches(
    woven: Loom, fake_provider: FakeProvider, keep_partial: bool
) -> None:
    code, _, _ = interrupt_gen(woven, fake_provider, *(["--keep-partial"] if keep_partial else []))
    assert code == 130
    kids = woven.ok("ls", "--fields", "all").json()["nodes"]
    texts = sorted(k["text"] for k in kids)
    if keep_partial:
        assert len(kids) == 2
        partial = next(k for k in kids if k["text"] != " fast and done")
        assert partial["meta"]["incomplete"] is True
    else:
        assert texts == [" fast and done"]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_finished_branches_as_ctrl_c_does(
    woven: Loom, fake_provider: FakeProvider, signum: int, code: int
) -> None:
    exit_code, out, err = interrupt_gen(woven, fake_provider, "--json", signum=signum)
    assert exit_code == code and err.count("\n") == 1 and err.startswith("loom: error: ")
    error = json.loads(out)
    assert error["error"]["code"] == "interrupted"
    assert signal.Signals(signum).name in error["error"]["message"]
    [kept] = error["error"]["details"]["nodes"]
    assert kept["text"] == " fast and done"
    assert [k["id"] for k in woven.ok("ls", "--fields", "all").json()["nodes"]] == [kept["id"]]


def test_ctrl_c_with_json_is_an_error_object_listing_what_was_kept(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    code, out, err = interrupt_gen(woven, fake_provider, "--fields", "all")
    assert code == 130 and err.startswith("loom: error: interrupted")
    error = json.loads(out)  # one object, on stdout
    assert error["ok"] is False and error["error"]["code"] == "interrupted"
    [kept] = error["error"]["details"]["nodes"]
    assert kept["text"] == " fast and done" and kept["meta"]["gen"]["model"] == "single"
    assert [k["id"] for k in woven.ok("ls", "--fields", "all").json()["nodes"]] == [kept["id"]]


def test_one_generation_is_one_undo_step(woven: Loom, fake_provider: FakeProvider) -> None:
    gen(woven, "-n", "3")
    assert len(woven.ok("ls", "--fields", "all").json()["nodes"]) == 3
    woven.ok("undo")
    assert woven.ok("ls", "--fields", "all").json()["nodes"] == []


def test_credentials_in_a_base_url_are_never_stored(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.api_key = None  # httpx sends URL userinfo as Basic auth, not our Bearer key
    url = fake_provider.openai_url.replace("http://", "http://user:s3cretpw@")
    woven.ok(
        "models",
        "add",
        "creds",
        "--provider",
        "openai",
        "--base-url",
        url,
        "--model",
        "m",
        "--kind",
        "base",
    )
    made = gen(woven, "-m", "creds", "-n", "1")
    assert made["nodes"][0]["meta"]["gen"]["base_url"] == fake_provider.openai_url.rstrip("/")  # type: ignore[index]
    assert "s3cretpw" not in (woven.cwd / "s.loom.json").read_text()
    assert "s3cretpw" not in woven.ok("models", "--json").stdout


def test_the_document_system_message_frames_chat_models(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    woven.ok("set", "system", "SYSTEM-MARKER: continue in the voice of a ship's log.")
    gen(woven, "-m", "chat", "-n", "1", "--emulate", "system")
    messages = fake_provider.requests[0].body["messages"]
    assert messages[0]["role"] == "system" and "SYSTEM-MARKER" in messages[0]["content"]


def test_pass_through_fields_are_sent_recorded_and_reused(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    made = gen(woven, "-n", "1", "--param", "openai.user=abc")
    assert fake_provider.requests[0].body["user"] == "abc"
    record = made["nodes"][0]["meta"]["gen"]  # type: ignore[index]
    assert record["sent"]["user"] == "abc" and record["extra"] == {"user": "abc"}
    fake_provider.clear()
    woven.ok("regen", made["nodes"][0]["id"], env=woven.env)  # type: ignore[attr-defined,index]
    assert fake_provider.requests[0].body["user"] == "abc"


def test_a_key_passed_through_is_sent_but_never_kept(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    secret = "sk-proj-" + "a1b2c3d4" * 4
    made = gen(
        woven, "-n", "1", "--param", f"openai.api_key={secret}", "--param", f"openai.user={secret}"
    )
    body = fake_provider.requests[0].body
    assert body["api_key"] == secret and body["user"] == secret  # the user asked for that
    record = made["nodes"][0]["meta"]["gen"]  # type: ignore[index]
    assert "api_key" not in record["extra"] and record["extra"]["user"] == "***"
    assert "api_key" not in record["sent"] and record["sent"]["user"] == "***"
    assert secret not in (woven.cwd / "s.loom.json").read_text()


def test_pass_through_cannot_swap_the_model(woven: Loom, fake_provider: FakeProvider) -> None:
    result = woven("gen", "-n", "1", "--param", "openai.model=expensive", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1 and "cannot set model" in result.stderr
    assert fake_provider.requests == []


def test_a_crashing_backend_does_not_lose_the_other_branches(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    """A bug in one backend (any exception, not a provider error) must not cost the others."""
    import loom
    from loom import ops, store
    from loom.document import Document
    from loom.generation.backends.base import Backend, Capabilities, GenRequest, WireParams

    class Crashing(Backend):
        name = "crashing"
        capabilities = Capabilities(raw_prompt=True)

        def wire_params(self, request: GenRequest) -> WireParams:
            return WireParams(body={})

        async def stream(self, request: GenRequest):  # type: ignore[no-untyped-def,override]
            raise RuntimeError("bug in a backend")
            yield  # an async generator

    path = tmp_path / "c.loom.json"
    doc = Document.new()
    ops.add_child(doc, None, "Once")
    store.save(doc, path)
    for name in ("good", "bad"):
        loom.config.add_model(
            name, {"provider": "openai", "model": "m", "base_url": fake_provider.openai_url}
        )
    request = loom.GenerationRequest(n=1, models=("good", "bad"))
    result = loom.generate(path, request, backends={"bad": Crashing()})
    assert [n.text for n in result.nodes] == [result.outcomes[0].text] and result.outcomes[0].text
    assert "internal error in crashing: RuntimeError: bug in a backend" in (
        result.outcomes[1].error or ""
    )
    assert len(store.load(path).nodes) == 2


def test_children_of_a_node_edited_during_generation_become_orphans(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.latency = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", "gen", "-n", "1", "--fields", "all"],
        cwd=woven.cwd,
        env={**os.environ, **woven.env},  # type: ignore[attr-defined]
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not fake_provider.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    woven.ok("edit", "--text", "Twice upon a time")  # a leaf: edited in place
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    roots = woven.ok("tree", "--json").json()["roots"]
    assert len(roots) == 2
    orphan = woven.ok("show", roots[1], "--json").json()["node"]
    assert orphan["text"].startswith("Once upon a time") and orphan["meta"]["orphan_of"] == roots[0]


def test_live_view_on_a_terminal(woven: Loom, fake_provider: FakeProvider) -> None:
    """With stderr on a terminal, every branch streams into a compact view with progress."""
    import pty

    fake_provider.chunk_delay = 0.01
    fake_provider.script(Reply([" alpha beta gamma", " delta epsilon"], finish_reason="stop"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", "gen", "-n", "2"],
        cwd=woven.cwd,
        env={**os.environ, **woven.env},  # type: ignore[attr-defined]
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    screen = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(master, 65536):
            screen += chunk
    os.close(master)
    assert proc.returncode == 0
    drawn = screen.decode(errors="replace")
    assert "generating 2/2" in drawn
    assert "alpha beta gamma" in drawn and "delta epsilon" in drawn
    assert "\x1b[" in drawn  # redrawn in place
    assert len(out.decode().split()) == 2  # stdout (a pipe) still gets just the ids


@pytest.mark.parametrize("url", ["http://[::1/v1", "ftp://host/v1", "localhost:8080"])
def test_a_malformed_base_url_is_refused_when_added(loom: Loom, url: str) -> None:
    result = loom("models", "add", "x", "--provider", "openai", "--base-url", url, "--model", "m")
    assert (
        result.code == 1
        and "is not an http(s) URL" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_fit_prompt_keeps_the_tail_that_fits() -> None:
    from loom.errors import InvalidOperation
    from loom.generation.plan import fit_prompt

    text = " ".join(f"word{i}" for i in range(2000))
    tail, cut = fit_prompt(text, 512, 64, 8)
    assert cut > 0 and text.endswith(tail) and text[:cut] + tail == text
    assert text[cut - 1] == " "  # cut between words
    assert len(tail) * 0.4 <= 512 - 64 - 8
    assert fit_prompt("short", 512, 64, 8) == ("short", 0)
    assert fit_prompt(text, None, 64, 8) == (text, 0)
    with pytest.raises(InvalidOperation):
        fit_prompt(text, 100, 200, 8)


def test_a_conversation_whose_last_turn_is_too_long_says_it_was_cut(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    """One user turn longer than the window: its head is cut to fit. The warning and the
    record said nothing (only messages left out counted), and the system message was not
    counted against the window."""
    woven.ok(
        "models", "add", "small-chat", "--provider", "openai-chat", "--base-url",
        fake_provider.openai_url, "--model", "m", "--kind", "chat", "--context", "1024",
        "--key-env", "FAKE_KEY",
    )  # fmt: skip
    woven.ok("new", "chat.loom.json")
    woven.ok("set", "system", "Be brief. " * 100)
    turn = " ".join(f"w{i}" for i in range(3000))
    result = woven(
        "say", "-m", "small-chat", "-n", "1", "--max-tokens", "16", "--fields", "all", turn,
        env=woven.env,  # type: ignore[attr-defined]
    )  # fmt: skip
    assert result.code == 0, result.stderr
    [warning] = result.json()["warnings"]
    assert "characters of its last message were cut" in warning
    messages = fake_provider.requests[0].body["messages"]
    sent = messages[-1]["content"]
    assert turn.endswith(sent) and len(sent) < len(turn)
    [reply] = result.json()["nodes"]
    assert reply["meta"]["gen"]["prompt"]["cut"] == len(turn) - len(sent)
    system = messages[0]["content"]
    assert (len(system) + len(sent)) * 0.4 <= 1024 - 16  # both fit the window together


def test_a_branch_longer_than_the_context_sends_its_tail(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    woven.ok(
        "models",
        "add",
        "small",
        "--provider",
        "openai",
        "--base-url",
        fake_provider.openai_url,
        "--model",
        "m",
        "--kind",
        "base",
        "--context",
        "256",
        "--key-env",
        "FAKE_KEY",
    )
    long_text = " ".join(f"w{i}" for i in range(3000))
    woven.ok("add", long_text)
    result = woven("gen", "-m", "small", "-n", "1", "--max-tokens", "16", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 0 and "longer than the model's context" in result.stderr
    sent = fake_provider.requests[0].body["prompt"]
    assert long_text.endswith(sent) and len(sent) < len(long_text)
    [child] = woven.ok("ls", "--fields", "all").json()["nodes"]
    assert child["meta"]["gen"]["prompt"]["trimmed"] == len("Once upon a time" + long_text) - len(
        sent
    )


def test_gen_on_a_terminal_numbers_children_as_ls_does_and_says_what_next(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    from test_render import on_terminal

    env = woven.env  # type: ignore[attr-defined]
    woven.ok("add", " an older child", "--stay")
    fake_provider.script(Reply([" alpha", " beta"], finish_reason="stop"))
    result = on_terminal(woven.cwd, "gen", "-n", "2", env=env)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["2.", "3."]  # `loom down 2` is alpha
    assert lines[2] == "(`loom down N`, N in 2..3, to continue from one; `loom tree` to see them)"
    woven.ok("down", "2")
    assert woven.ok("show").stdout == "Once upon a time alpha"


def test_gen_on_a_terminal_shows_each_childs_modulated_values(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    from test_render import on_terminal

    env = woven.env  # type: ignore[attr-defined]
    result = on_terminal(woven.cwd, "gen", "-n", "3", "--sweep", "temperature=0.6:1.0", env=env)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines[:3]] == [
        "temperature=0.6",
        "temperature=0.8",
        "temperature=1",
    ]
    mixed = on_terminal(woven.cwd, "gen", "--mix", "1@base:creative,1@chat", env=env)
    assert mixed.code == 0, mixed.stderr
    ends = [line.rsplit(" ", 1)[-1] for line in mixed.stdout.splitlines()[:2]]
    assert ends == ["mix=1@base:creative", "mix=1@chat"]


def test_live_view_with_more_branches_than_rows_stays_on_screen(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    import re

    from loom.cli import render
    from test_render import on_terminal

    env = woven.env  # type: ignore[attr-defined]
    fake_provider.chunk_delay = 0.005
    result = on_terminal(woven.cwd, "gen", "-n", "12", env=env, rows=8, columns=40, stderr_too=True)
    assert result.code == 0
    screen = result.stdout
    ups = [int(n) for n in re.findall(r"\x1b\[(\d+)F", screen)]
    assert ups and max(ups) <= 7  # a frame is never taller than rows - 1
    assert "… 7 more" in screen
    for frame_line in screen.split("\x1b[2K")[1:]:
        drawn = frame_line.split("\n")[0]
        assert render.visible_width(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", drawn)) < 40, drawn
