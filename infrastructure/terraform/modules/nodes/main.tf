data "aws_ami" "node" {
  count = var.image_id == null ? 1 : 0

  most_recent = true
  owners      = var.image_owners

  filter {
    name   = "name"
    values = [var.image_name]
  }
}

locals {
  image_id = var.image_id != null ? var.image_id : data.aws_ami.node[0].id
}

resource "aws_instance" "node" {
  count = var.node_count

  ami                    = local.image_id
  instance_type          = var.node_size
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids = var.security_group_ids

  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }

  tags = merge(var.tags, {
    Name = "${var.name}-node-${count.index}"
    Role = count.index == 0 ? "control_plane" : "workers"
  })

  lifecycle {
    # A newer image must not replace running nodes on the next plan; roll nodes on purpose.
    ignore_changes = [ami]
  }
}
