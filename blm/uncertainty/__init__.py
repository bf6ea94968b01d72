"""What a user asks of a posterior: predictive distributions and their quality."""
