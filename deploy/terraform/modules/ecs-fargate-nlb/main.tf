# switchyard on ECS Fargate behind an internal Network Load Balancer.
#
# Clients -> NLB (TCP listener, idle timeout raised) -> TCP target group (IP targets, health
# check HTTP /readyz on the admin port) -> Fargate tasks -> database clusters.
#
# A stopping task: ECS deregisters it, the NLB stops sending new connections and waits
# deregistration_delay, then ECS sends SIGTERM and the proxy drains (sessions end at a
# transaction boundary) within stopTimeout. deregistration_delay and stopTimeout both exceed
# shutdown_timeout.

locals {
  container = "switchyard"
  # The Fargate maximum is 120 s.
  stop_timeout = min(var.shutdown_timeout_seconds + 15, 120)
  # Longer than the drain, so no connection is cut by the NLB before the proxy ends it.
  deregistration_delay = var.shutdown_timeout_seconds + 30
}

data "aws_region" "current" {}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

# --- IAM: the execution role reads the secrets and writes logs; the task role does nothing.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "secrets" {
  count = length(var.secrets) > 0 ? 1 : 0
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = distinct([for arn in values(var.secrets) : regex("^(arn:[^:]+:secretsmanager:[^:]+:[^:]+:secret:[^:]+)", arn)[0]])
  }
}

resource "aws_iam_role_policy" "secrets" {
  count  = length(var.secrets) > 0 ? 1 : 0
  name   = "read-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets[0].json
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

# --- The task: the config file is written from an environment variable by a tiny shell
# step, so no EFS or S3 is needed; secrets come from Secrets Manager as variables.

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  container_definitions = jsonencode([{
    name                   = local.container
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = false
    user                   = "10001:10001"
    entryPoint             = ["/bin/sh", "-c"]
    command                = ["mkdir -p /tmp/switchyard && printf '%s' \"$SWITCHYARD_CONFIG_TOML\" > /tmp/switchyard/switchyard.toml && exec /usr/local/bin/switchyard serve --config /tmp/switchyard/switchyard.toml"]
    environment = [
      { name = "SWITCHYARD_CONFIG_TOML", value = var.config_toml },
      { name = "SWITCHYARD_LOG", value = "info" },
    ]
    secrets     = [for k, arn in var.secrets : { name = k, valueFrom = arn }]
    stopTimeout = local.stop_timeout
    portMappings = [
      { containerPort = var.listener_port, protocol = "tcp" },
      { containerPort = var.admin_port, protocol = "tcp" },
    ]
    ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    healthCheck = {
      command     = ["CMD", "curl", "-fsS", "http://127.0.0.1:${var.admin_port}/healthz"]
      interval    = 10
      timeout     = 3
      retries     = 3
      startPeriod = 10
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = local.container
      }
    }
  }])
  tags = var.tags
}

# --- Network Load Balancer

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:access logs need a bucket the caller owns: set access_logs_bucket
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
  tags = var.tags
}

resource "aws_lb_target_group" "this" {
  name                 = var.name
  port                 = var.listener_port
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = local.deregistration_delay
  # Connections still open when the delay ends are closed rather than left half-routed.
  connection_termination = true
  health_check {
    protocol            = "HTTP"
    port                = tostring(var.admin_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = var.tags
}

resource "aws_lb_listener" "this" {
  load_balancer_arn        = aws_lb.this.arn
  port                     = var.listener_port
  protocol                 = "TCP"
  tcp_idle_timeout_seconds = var.idle_timeout_seconds
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
  tags = var.tags
}

# --- Security groups: clients -> NLB -> tasks -> databases

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "switchyard NLB: client connections"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "nlb_clients" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "Applications"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
}

resource "aws_vpc_security_group_egress_rule" "nlb_tasks" {
  for_each                     = toset([tostring(var.listener_port), tostring(var.admin_port)])
  security_group_id            = aws_security_group.nlb.id
  description                  = "To the tasks (traffic and health checks)"
  referenced_security_group_id = aws_security_group.task.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_security_group" "task" {
  name        = "${var.name}-task"
  description = "switchyard tasks"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "task_from_nlb" {
  for_each                     = toset([tostring(var.listener_port), tostring(var.admin_port)])
  security_group_id            = aws_security_group.task.id
  description                  = "From the NLB (traffic and health checks)"
  referenced_security_group_id = aws_security_group.nlb.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_vpc_security_group_ingress_rule" "task_metrics" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.task.id
  description       = "Prometheus scrapes /metrics"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
}

resource "aws_vpc_security_group_egress_rule" "task_databases" {
  for_each                     = toset(var.database_security_group_ids)
  security_group_id            = aws_security_group.task.id
  description                  = "To the database clusters"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
}

resource "aws_vpc_security_group_ingress_rule" "databases_from_task" {
  for_each                     = toset(var.database_security_group_ids)
  security_group_id            = each.value
  description                  = "From switchyard"
  referenced_security_group_id = aws_security_group.task.id
  ip_protocol                  = "tcp"
  from_port                    = var.database_port
  to_port                      = var.database_port
}

resource "aws_vpc_security_group_egress_rule" "task_https" {
  security_group_id = aws_security_group.task.id
  description       = "Image pulls, Secrets Manager and CloudWatch Logs (HTTPS)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "task_dns" {
  security_group_id = aws_security_group.task.id
  description       = "DNS (discovery resolves cluster endpoints)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "udp"
  from_port         = 53
  to_port           = 53
}

# --- The service

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = local.container
    container_port   = var.listener_port
  }
  lifecycle {
    # Autoscaling owns the count.
    ignore_changes = [desired_count]
  }
  depends_on = [aws_lb_listener.this]
  tags       = var.tags
}

# --- Autoscaling on CPU

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value = var.cpu_target_percent
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    # Scale in slowly: each task removed drains its sessions.
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
  }
}
