"""RPM inputs: headers, payloads, signatures, repositories, the solver, locks and the RPM sysroot."""
