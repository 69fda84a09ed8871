"""Real local servers for the test suite: fixtures in ``fixtures``, smoke tests beside."""
