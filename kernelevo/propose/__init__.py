"""The proposer stage: prompts, model tiers, reply parsing, cost accounting, and the offline tuner."""
