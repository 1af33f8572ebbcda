"""tests/deploy: the compose front (nginx) runs in every `make test`; the image test builds images
for minutes, so it is collected only when asked for: `make image-test` sets
CODEASSIST_IMAGE_TEST=1 (it is not a skip: without the variable the file is not a test here)."""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("CODEASSIST_IMAGE_TEST") == "1" else ["test_image.py"]
