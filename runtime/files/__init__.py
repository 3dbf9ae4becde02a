"""Files and pictures: reading images and video, finding inputs, painting and writing pictures."""
