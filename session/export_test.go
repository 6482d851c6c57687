package session

// ParseMemAvailable is exported for tests.
var ParseMemAvailable = parseMemAvailable
