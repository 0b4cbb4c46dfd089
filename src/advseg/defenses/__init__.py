"""Defenses against adversarial attacks on segmentation models, and the attacks that judge them.

A defense is judged by the strongest attack that applies to it, never by plain gradients
alone (Carlini et al. 2019; SEA shows weak attacks over-credit segmentation defenses):

- :mod:`.training_inputs`: Gaussian-noise augmentation, fast (FGSM with random start) and PGD
  adversarial training, as batch makers that turn a training batch into the inputs to train on.
  The result is an ordinary model: every attack applies as it is.
- :mod:`.smoothing` and :mod:`.certification`: randomized smoothing for segmentation (Fischer
  et al. 2021): the per-pixel majority over noisy copies, certified radii, certified Dice and
  abstain rate. The smoothed model is random: attack it with :mod:`.eot`.
- :mod:`.ensemble`: the mean of several models' sigmoid outputs as one model, attacked white-box.
- :mod:`.purification`: an input-purification baseline (intensity quantisation) that masks
  gradients; BPDA (straight-through) attacks it, and a check flags the masking.
- :mod:`.eot`: expectation over transformation, the attack-side wrapper for random defenses.

This package imports nothing itself, so :mod:`advseg.attacks` can import :mod:`.eot`.
"""
