"""Images as Darknet reads them, below everything that uses them (inference, training data,
dataset checks, VOC conversion): :mod:`.image` (image.c's ``load_image``, ``resize_image``,
``letterbox_image``; the demo's video-frame rule) and :mod:`.image_header` (sizes from file
headers, the pixel cap checked before anything is decoded)."""
