# What sets technical apart from the other environments. The other .tf files here are links to
# the stack every environment shares, in ../../modules/environment/stack/.
locals {
  # the zone belongs to production: apply production first
  create_zone = false
}
