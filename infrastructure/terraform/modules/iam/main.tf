# The backup job may list, write, read (restore drills) and delete under its prefix. Deleting on
# a versioned bucket only adds a delete marker; it gets no DeleteObjectVersion, no bucket-wide
# rights and nothing outside the prefix, so a leaked key cannot erase the history.
data "aws_iam_policy_document" "backup_writer" {
  statement {
    sid       = "ListBackups"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.prefix, "${var.prefix}*"]
    }
  }

  statement {
    sid       = "ReadWriteBackups"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/${var.prefix}*"]
  }

  statement {
    sid       = "EncryptedTransportOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [var.bucket_arn, "${var.bucket_arn}/*"]

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_iam_policy" "backup_writer" {
  name        = "${var.name}-backup-writer"
  description = "Least privilege for the PostgreSQL backups of ${var.name}"
  policy      = data.aws_iam_policy_document.backup_writer.json
  tags        = var.tags
}

# Access keys are not created here (they would land in the state): issue them out of band or
# through Vault's AWS secrets engine.
resource "aws_iam_user" "backup_writer" {
  name = "${var.name}-backup-writer"
  path = "/socialnet/"
  tags = var.tags
}

resource "aws_iam_user_policy_attachment" "backup_writer" {
  user       = aws_iam_user.backup_writer.name
  policy_arn = aws_iam_policy.backup_writer.arn
}
