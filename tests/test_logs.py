"""A workflow job's fatal error lands in its log file (Snakemake points users there)."""

import subprocess
import sys


def test_uncaught_error_is_written_to_the_job_log(tmp_path):
    log = tmp_path / "logs" / "job.log"
    script = f"from bihmf.logs import log_to\nlog_to({str(log)!r})\nraise ValueError('bad record 1abc_0-A')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    text = log.read_text()
    assert "job failed" in text and "ValueError: bad record 1abc_0-A" in text and "Traceback" in text
