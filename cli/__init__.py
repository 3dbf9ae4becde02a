"""segtool's command line (typer); `segtool --help` lists the commands."""

import segtool.runtime  # noqa: F401  # first: it quiets OpenCV's and FFmpeg's logs before cv2 loads
