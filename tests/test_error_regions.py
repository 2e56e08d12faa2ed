"""benchmarks/error_regions.py: the regions its figures are sums over."""

import numpy as np
from error_regions import REGIONS, regions


def test_regions_split_every_pixel_once_and_find_where_people_meet():
    alphas = np.zeros((3, 32, 48), np.float32)
    alphas[0, 4:28, 4:20] = 1.0          # person 0 ...
    alphas[1, 4:28, 20:30] = 1.0         # ... and person 1 side by side, meeting at column 20
    alphas[2, 10:20, 38:44] = 1.0        # person 2 alone on the right
    for i in range(3):
        parts = regions(alphas, i)
        assert len(parts) == len(REGIONS)
        assert (np.sum(parts, axis=0) == 1).all(), "every pixel in exactly one region"
    meet, against_bg = regions(alphas, 0)[:2]
    assert meet[8:24, 16:24].all() and not meet[:, :12].any() and not meet[:, 30:].any()
    assert against_bg[3, 10] and against_bg[16, 4] and not against_bg[16, 20]
    assert not regions(alphas, 2)[0].any(), "nobody meets person 2"
    assert regions(alphas, 1)[3][16, 10], "person 0's inside is 'on other people' for person 1"
