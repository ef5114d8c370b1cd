"""What runs checks: the grader, the check server, the cell shell, the outside-kernel preprocessors."""
