"""``kernelevo report``: run databases as one self-contained HTML page, and a suite's summary table.

Importing the package loads no plotting library: ``optimize`` prints the suite table through it.
"""

from kernelevo.html.data import SuiteRow, load_run, read_run, suite_rows
from kernelevo.html.suite import print_suite_table

__all__ = ["SuiteRow", "load_run", "print_suite_table", "read_run", "suite_rows"]
