"""One case on the harness's side: the masks a method returned, checked, applied, enforced through fine-tuning, checked again."""
