"""The core stays light: the dashboard installs without torch."""

import subprocess
import sys


def test_the_core_imports_no_torch_timm_or_streamlit():
    code = (
        "import sys, pepr, pepr.cli, pepr.score, pepr.store, pepr.paper, pepr.sensitivity, pepr.importer, pepr.report\n"
        "heavy = sorted({'torch', 'timm', 'streamlit', 'codecarbon'} & set(sys.modules))\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
