"""The run folder's schema under its historical name: `camscope.io.runfolder` re-exported.

New code imports `camscope.io.runfolder` (below both `camscope.run` and `camscope.report`).
"""

from camscope.io.runfolder import *  # noqa: F403
from camscope.io.runfolder import __all__  # noqa: F401
