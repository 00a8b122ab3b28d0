"""The ToCo method between the network and the losses: multi-scale CAMs (``cam``), pseudo labels and token labels
(``labels``), ROI masks and local crops (``crops``), PAR refinement (``refine``), the image box of a padded crop
(``img_box``) and the loss schedule (``schedule``)."""
