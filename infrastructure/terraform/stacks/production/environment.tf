# What sets production apart from the other environments. The other .tf files here are links to
# the stack every environment shares, in ../../modules/environment/stack/.
locals {
  # production sits at the apex and owns the primary zone
  create_zone = true
}
