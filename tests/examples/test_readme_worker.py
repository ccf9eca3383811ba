"""The README's library example of the whole path (JobService → queue → Worker → handler) runs as
written."""

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def readme_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    return block


def test_the_readme_library_example_completes_its_job() -> None:
    code = readme_block("asyncio.run(main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "building daily_summary\n"


def test_the_readme_handler_module_defines_handlers() -> None:
    namespace: dict[str, object] = {}
    exec(readme_block("# myapp/jobs.py"), namespace)
    from portico.worker.handlers import HandlerTable

    assert HandlerTable(namespace["handlers"]).job_types == ["report.daily"]  # type: ignore[arg-type]
