"""The compression pipeline: context -> conductor (plan) -> exploration (stage 1) -> annealing
(stage 2), with fine-tuning by distillation and a resumable run directory."""
