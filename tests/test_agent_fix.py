"""`gemma-agent fix` end to end: a real sample repository, real pytest runs, replayed Gemma 4 native outputs."""
import json
import subprocess

import pytest

import sandbox
from agent.cli import main
from tests.fixtures.agent.sample_repo import git, make_sample_repo

S = '<|"|>'
READ = f"Let me look.<|tool_call>call:read_file{{path:{S}calc/ops.py{S}}}<tool_call|>"
EDIT = (f"<|tool_call>call:edit_file{{path:{S}calc/ops.py{S},old:{S}return a - b{S},"
        f"new:{S}return a + b{S}}}<tool_call|>")
EXPECTED_PATCH_LINES = ["-    return a - b", "+    return a + b"]


def write_transcript(path, outputs):
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return str(path)


@pytest.fixture
def repo(tmp_path):
    return make_sample_repo(tmp_path)


def run_fix(repo, transcript, *extra):
    return main(["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--replay", transcript,
                 "--no-sandbox", *extra])


def test_fix_repairs_seeded_bug_and_prints_patch(repo, tmp_path, capsys):
    code = run_fix(repo, write_transcript(tmp_path / "t.jsonl", [READ, EDIT, "Fixed add."]))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert all(line in out.out.splitlines() for line in EXPECTED_PATCH_LINES)
    assert "calc/ops.py" in out.out
    assert "return a - b" in (repo / "calc/ops.py").read_text()  # the user's tree is untouched
    assert git(repo, "status", "--porcelain") == ""
    patch = tmp_path / "fix.patch"
    patch.write_text(out.out)
    subprocess.run(["git", "apply", "--check", str(patch)], cwd=repo, check=True)


def test_fix_json_report_with_malformed_and_repeated_calls(repo, tmp_path, capsys):
    outputs = [
        "<|tool_call>call:read_file{path: calc/ops.py}<tool_call|>",  # malformed: unquoted string
        READ, READ, READ,  # repeated: the third is flagged to the model
        '```json\n{"name": "edit_file", "arguments": {"path": "calc/ops.py", "old": "return a - b", '
        '"new": "return a + b"}}\n```',  # printed as JSON in a fence: recovered
    ]
    code = run_fix(repo, write_transcript(tmp_path / "t.jsonl", outputs), "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["status"] == "fixed" and report["steps"] == 5
    assert report["tests_before"]["failing"] == ["tests/test_ops.py::test_add"]
    assert report["tests_after"]["failed"] == 0 and report["tests_after"]["passed"] == 2
    assert report["tokens_in"] > 0 and report["tokens_out"] > 0 and report["seconds"] > 0
    assert all(line in report["patch"].splitlines() for line in EXPECTED_PATCH_LINES)
    assert "malformed tool call" in out.err
    assert report["recovered_calls"] == 1  # the fenced JSON call


def test_record_writes_a_transcript_that_replays_to_the_same_fix(repo, tmp_path, capsys):
    recorded = tmp_path / "recorded.jsonl"
    assert run_fix(repo, write_transcript(tmp_path / "t.jsonl", [READ, EDIT, "unused"]), "--record",
                   str(recorded)) == 0
    first = capsys.readouterr().out
    assert [json.loads(line) for line in recorded.read_text().splitlines()] == [READ, EDIT]
    assert run_fix(repo, str(recorded)) == 0
    assert capsys.readouterr().out == first


def test_fix_not_fixed_within_budget_exits_1(repo, tmp_path, capsys):
    outputs = [f"<|tool_call>call:run_tests{{selector:{S}tests/test_ops.py::test_{n}{S}}}<tool_call|>"
               for n in ("add", "mul") * 10]
    code = run_fix(repo, write_transcript(tmp_path / "t.jsonl", outputs), "--max-steps", "4", "--json")
    out = capsys.readouterr()
    assert code == 1
    report = json.loads(out.out)
    assert report["status"] == "not_fixed" and report["steps"] == 4 and report["patch"] == ""


def test_fix_doom_loop_exits_1_with_reason(repo, tmp_path, capsys):
    code = run_fix(repo, write_transcript(tmp_path / "t.jsonl", [READ] * 10), "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and "repeated the identical call read_file 5 times" in report["reason"]


def test_fix_apply_and_patch_file(repo, tmp_path, capsys):
    transcript = write_transcript(tmp_path / "t.jsonl", [EDIT, "done"])
    patch_file = tmp_path / "out.patch"
    assert run_fix(repo, transcript, "--patch", str(patch_file)) == 0
    assert EXPECTED_PATCH_LINES[1] in patch_file.read_text().splitlines()
    assert run_fix(repo, transcript, "--apply") == 0
    assert "return a + b" in (repo / "calc/ops.py").read_text()


def test_fix_exit_3_when_test_already_passes(repo, tmp_path, capsys):
    code = main(["fix", "tests/test_ops.py::test_mul", "--repo", str(repo), "--no-sandbox",
                 "--replay", write_transcript(tmp_path / "t.jsonl", [READ])])
    assert code == 3


def test_fix_usage_errors_exit_2(repo, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GEMMA_AGENT_MODEL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "gemma-agent convert" in err and "--backend openai --base-url" in err and "Traceback" not in err
    assert main(["fix", "tests/test_ops.py::test_nope", "--repo", str(repo), "--no-sandbox",
                 "--replay", write_transcript(tmp_path / "t.jsonl", [READ])]) == 2
    assert "no test matched" in capsys.readouterr().err
    assert main(["fix", "x", "--repo", str(tmp_path), "--replay", str(tmp_path / "t.jsonl")]) == 2
    assert "not inside a git repository" in capsys.readouterr().err


@pytest.mark.skipif(not sandbox.available(), reason="the sandbox cannot run on this machine (bubblewrap missing?)")
def test_fix_runs_pytest_in_the_sandbox(repo, tmp_path, capsys):
    code = main(["fix", "tests/test_ops.py::test_add", "--repo", str(repo), "--json",
                 "--replay", write_transcript(tmp_path / "t.jsonl", [READ, EDIT, "Fixed add."])])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["status"] == "fixed" and report["tests_after"]["passed"] == 2


def test_thinking_mode_keeps_thoughts_out_of_the_patch_and_the_report(repo, tmp_path, capsys):
    outputs = [
        "<|channel>thought\nSECRET-THOUGHT: read ops first<channel|>" + READ,
        "SECRET-THOUGHT: a minus<channel|>" + EDIT.replace("<tool_call|>", "<turn|>"),  # after results: in thought
        "SECRET-THOUGHT: done<channel|>Fixed add.",
    ]
    code = run_fix(repo, write_transcript(tmp_path / "t.jsonl", outputs), "--json", "--thinking")
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["status"] == "fixed" and report["recovered_calls"] == 1  # the edit closed by <turn|>
    assert "SECRET-THOUGHT" not in out.out + out.err
