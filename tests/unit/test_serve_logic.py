"""Serve mode's pure logic: roles from vLLM's process titles, engine args as server flags, the per-process
round table and findings grouped by process."""

from tracer.analysis.findings import Finding
from tracer.analysis.stacks import Frame
from tracer.output.processes import by_process, process_round_table
from tracer.record.hook.agent import role_from_title
from tracer.workload.serve import engine_flags


def test_roles_from_vllm_titles():
    assert role_from_title("VLLM::EngineCore") == "engine-core"
    assert role_from_title("VLLM::EngineCore_DP0") == "engine-core"
    assert role_from_title("VLLM::EngineCore_DP1") == "engine-core-1"
    assert role_from_title("VLLM::Worker") == "worker-0"
    assert role_from_title("VLLM::Worker_TP3") == "worker-3"
    assert role_from_title("VLLM::Worker_PP1_TP2") == "worker-2"
    assert role_from_title("MYPREFIX::Worker_TP1") == "worker-1"
    assert role_from_title("python -m something") is None


def test_engine_args_become_server_flags():
    flags = engine_flags({"max_model_len": 4096, "enforce_eager": True, "enable_prefix_caching": False,
                          "limit_mm_per_prompt": {"image": 2}, "dtype": "bfloat16"})
    assert flags == ["--max-model-len", "4096", "--enforce-eager", "--no-enable-prefix-caching",
                     "--limit-mm-per-prompt", '{"image": 2}', "--dtype", "bfloat16"]


def test_round_table_has_a_column_group_per_process():
    rounds = [{"index": i, "phase": "measured", "processes": {
        "api-server": {"rss_bytes": 2**20 * (10 + i), "uss_bytes": 2**20, "heap_bytes": 2**21},
        "engine-core": {"rss_bytes": 2**20 * 20, "uss_bytes": 2**20, "heap_bytes": None}}} for i in range(2)]
    header, _, first, second = process_round_table(rounds)
    assert header.split(" | ")[2:5] == ["api-server RSS MiB", "api-server USS MiB", "api-server C heap MiB"]
    assert "engine-core RSS MiB" in header and "GPU" not in header
    assert first.split(" | ")[2] == "10.0" and second.split(" | ")[2] == "11.0"
    assert first.rstrip(" |").endswith("-")  # the engine core's missing heap counter
    assert process_round_table([{"index": 0, "phase": "measured"}]) == []


def test_findings_grouped_by_process():
    stack = (Frame("f", "a.py", 1),)
    found = [Finding("host", stack, 3, 1, role="engine-core"), Finding("host", stack, 2, 1, role="api-server"),
             Finding("host", stack, 1, 1, role="engine-core")]
    groups = by_process(found)
    assert [role for role, _ in groups] == ["engine-core", "api-server"]
    assert [f.bytes for f in groups[0][1]] == [3, 1]
    assert found[0].id != found[1].id  # the role is part of the id
