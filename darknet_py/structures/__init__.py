"""Small value types shared by inference, evaluation and training: boxes and the IoU family
(:mod:`.boxes`), detections (:mod:`.detections`) and detection-head descriptions (:mod:`.heads`)."""
