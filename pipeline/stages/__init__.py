"""Pipeline stages: init_priors, mine, smooth, train, evaluate, finetune."""
