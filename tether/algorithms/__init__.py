"""One readable file per algorithm: the stage's loop, in the order the math reads."""
