"""Training data as Darknet reads it: ``obj.data`` (:mod:`.datacfg`), image -> label paths
(:mod:`.paths`), YOLO label files (:mod:`.labels`), the detector augmentation (:mod:`.augment`),
the torch Dataset/DataLoader and multi-scale schedule (:mod:`.dataset`) and anchor k-means
(:mod:`.anchors`)."""
