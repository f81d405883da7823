"""AWS housekeeping shared by the `aws` provider and `spike reap`: tags, leftovers, prices."""
