SELECT set_config('factum.tenant', $1, true)
