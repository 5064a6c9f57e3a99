"""A bounded schemathesis run of the HTTP API (the long one: benchmarks/fuzz_server.py):
no 5xx, every response as the OpenAPI schema declares it, 405 with the right Allow, and
the database clean afterwards, for read, write and admin tokens."""

from fuzzing import fuzz


def test_fuzzing_the_api_from_its_schema_finds_nothing(tmp_path):
    result = fuzz(tmp_path / "fuzz", max_examples=25, seed=7, max_seconds_per_scope=25, log=lambda m: None)
    assert result["requests"] >= 500, result  # the fuzzer really reached the server
    assert result["server_errors"] == [], result["server_errors"][:10]
    for scope, verdict in result["verdicts"].items():
        assert verdict["exit_code"] == 0, (scope, verdict["summary"])
    assert result["check_clean"], result["check_problems"]
    assert set(result["by_status"]) >= {"200", "404", "422"}  # accepted, unknown and malformed requests all seen
