"""A deliberately literal transcription of the reference PGSeg model and inference (the authors' code,
github.com/Ferenas/PGSeg: models/pgseg.py, models/transformer.py, models/multi_label_contrastive.py,
segmentation/evaluation/pgseg_seg.py and the test pipeline of segmentation/configs/_base_/datasets), of the
GroupViT variant without the non-learnable prototypical regularization (github.com/NVlabs/GroupViT:
models/group_vit.py, models/transformer.py, models/utils.py, models/misc.py, models/multi_label_contrastive.py),
and of the mmseg 0.18 EncoderDecoder test path (whole_inference, slide_inference, inference, simple_test) and
the mmcv resize / normalise steps, written independently of the engine so the engine can be checked against it.

Literal on purpose: the module and parameter names are the authors', so that ``model.state_dict()`` has exactly
the keys of a released checkpoint's ``['model']`` dict (PGSeg: 437 entries, 64,746,015 elements at full size;
GroupViT: 406 entries). The order of operations is the authors' too, including the quirks: the image encoder runs
twice per crop (once in get_attn_maps, once in encode_image), the PGSeg GroupingLayer groups ``ori_x + re_x``
where ``re_x`` is the NPR reconstruction (10 EM iterations from the ``mu`` buffer) of the stage's *input* tokens,
and a PGSeg GroupingLayer built with ``return_attn_o=False`` returns its input ``x`` (the released config uses
``return_attn_o=True``, which is what is built here).

Changes that do not alter eval-mode numbers: einops.rearrange is written as reshape/permute, timm's trunc_normal_
is torch.nn.init.trunc_normal_, DropPath is the identity (eval only), SyncBatchNorm is BatchNorm1d (same keys,
same eval behaviour), ``torch.Tensor(sizes)`` is ``torch.empty(sizes)`` (so the model can be built on the meta
device), the stochastic-depth rates are computed on the CPU, and the training-only code is left out (losses,
Hungarian matching, forward_with_NPR, the NPR momentum updates, and the momentum update + all-gather of the text
``Atten`` prototypes, which the authors run on every text forward, eval included, but whose result is never used
at inference), so nothing here needs torch.distributed. The text transformer's head count is a parameter (the authors
fix it to width // 64) and the projector / NPR inner widths are parameters (the authors fix them to 4096) so a
small random-weight model can be built.
"""
import contextlib
import math
from collections import OrderedDict

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

trunc_normal_ = nn.init.trunc_normal_


def to_2tuple(x):
    if isinstance(x, (tuple, list)):
        return tuple(x)
    return (x, x)


# --------------------------------------------------------------------------------------------------------------
# models/misc.py
# --------------------------------------------------------------------------------------------------------------
class Result:

    def __init__(self, as_dict=False):
        if as_dict:
            self.outs = {}
        else:
            self.outs = []

    @property
    def as_dict(self):
        return isinstance(self.outs, dict)

    def append(self, element, name=None):
        if self.as_dict:
            assert name is not None
            self.outs[name] = element
        else:
            self.outs.append(element)

    def update(self, **kwargs):
        if self.as_dict:
            self.outs.update(**kwargs)
        else:
            for v in kwargs.values():
                self.outs.append(v)

    def as_output(self):
        if self.as_dict:
            return self.outs
        else:
            return tuple(self.outs)

    def as_return(self):
        outs = self.as_output()
        if self.as_dict:
            return outs
        if len(outs) == 1:
            return outs[0]
        return outs


def interpolate_pos_encoding(pos_embed, H, W):
    num_patches = H * W

    N = pos_embed.shape[1]
    if num_patches == N and W == H:
        return pos_embed
    patch_pos_embed = pos_embed
    dim = pos_embed.shape[-1]
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        size=(H, W),
        mode='bicubic',
        align_corners=False)
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return patch_pos_embed


# --------------------------------------------------------------------------------------------------------------
# models/pgseg.py (image encoder); the GroupViT (NVlabs models/group_vit.py) differences are marked
# --------------------------------------------------------------------------------------------------------------
class ProjectMLP(nn.Module):

    def __init__(self, in_dim=256, inner_dim=4096, out_dim=256, num_layers=2):
        super(ProjectMLP, self).__init__()
        # hidden layers
        linear_hidden = []
        for i in range(num_layers - 1):
            linear_hidden.append(nn.Conv1d(in_dim if i == 0 else inner_dim, inner_dim, kernel_size=1))
            linear_hidden.append(nn.BatchNorm1d(inner_dim))
            linear_hidden.append(nn.ReLU(inplace=True))
        self.linear_hidden = nn.Sequential(*linear_hidden)

        self.linear_out = nn.Conv1d(
            in_dim if num_layers == 1 else inner_dim, out_dim, kernel_size=1) if num_layers >= 1 else nn.Identity()

    def forward(self, x):
        """
        Args:
            x (torch.Tensor): output of transformers, shape [B, L, C]
        """
        assert x.ndim in [2, 3], x.ndim
        add_dim = False
        if x.ndim == 2:
            # [B, C] -> [B, L, C]
            x = x.unsqueeze(1)
            add_dim = True

        x = x.permute(0, 2, 1)          # rearrange(x, 'b l c -> b c l')
        x = self.linear_hidden(x)
        x = self.linear_out(x)
        x = x.permute(0, 2, 1)          # rearrange(x, 'b c l -> b l c')

        if add_dim:
            x = x.squeeze(1)

        return x


class Mlp(nn.Module):

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.fc2(x)
        x = self.drop(x)
        return x


class MixerMlp(Mlp):

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def hard_softmax(logits, dim):
    y_soft = logits.softmax(dim)
    # Straight through.
    index = y_soft.max(dim, keepdim=True)[1]
    y_hard = torch.zeros_like(logits, memory_format=torch.legacy_contiguous_format).scatter_(dim, index, 1.0)
    ret = y_hard - y_soft.detach() + y_soft

    return ret


def gumbel_softmax(logits: torch.Tensor, tau: float = 1, hard: bool = False, dim: int = -1) -> torch.Tensor:
    gumbel_dist = torch.distributions.gumbel.Gumbel(
        torch.tensor(0., device=logits.device, dtype=logits.dtype),
        torch.tensor(1., device=logits.device, dtype=logits.dtype))
    gumbels = gumbel_dist.sample(logits.shape)

    gumbels = (logits + gumbels) / tau  # ~Gumbel(logits,tau)
    y_soft = gumbels.softmax(dim)

    if hard:
        # Straight through.
        index = y_soft.max(dim, keepdim=True)[1]
        y_hard = torch.zeros_like(logits, memory_format=torch.legacy_contiguous_format).scatter_(dim, index, 1.0)
        ret = y_hard - y_soft.detach() + y_soft
    else:
        # Reparametrization trick.
        ret = y_soft
    return ret


def _split_heads(t, num_heads):
    # rearrange(t, 'b n (h c) -> b h n c', h=num_heads)
    B, N, C = t.shape
    return t.reshape(B, N, num_heads, C // num_heads).permute(0, 2, 1, 3)


def _merge_heads(t):
    # rearrange(t, 'b h n c -> b n (h c)')
    B, H, N, c = t.shape
    return t.permute(0, 2, 1, 3).reshape(B, N, H * c)


class AssignAttention(nn.Module):

    def __init__(self,
                 dim,
                 num_heads=1,
                 qkv_bias=False,
                 qk_scale=None,
                 attn_drop=0.,
                 proj_drop=0.,
                 hard=True,
                 gumbel=False,
                 gumbel_tau=1.,
                 sum_assign=False,
                 assign_eps=1.):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.hard = hard
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau
        self.sum_assign = sum_assign
        self.assign_eps = assign_eps

    def get_attn(self, attn, gumbel=None, hard=None):

        if gumbel is None:
            gumbel = self.gumbel

        if hard is None:
            hard = self.hard

        attn_dim = -2
        if gumbel and self.training:
            attn = gumbel_softmax(attn, dim=attn_dim, hard=hard, tau=self.gumbel_tau)
        else:
            if hard:
                attn = hard_softmax(attn, dim=attn_dim)
            else:
                attn = F.softmax(attn, dim=attn_dim)

        return attn

    def forward(self, query, key=None, *, value=None, return_attn=False):
        B, N, C = query.shape
        if key is None:
            key = query
        if value is None:
            value = key
        S = key.size(1)
        # [B, nh, N, C//nh]
        q = _split_heads(self.q_proj(query), self.num_heads)
        # [B, nh, S, C//nh]
        k = _split_heads(self.k_proj(key), self.num_heads)
        # [B, nh, S, C//nh]
        v = _split_heads(self.v_proj(value), self.num_heads)

        # [B, nh, N, S]
        raw_attn = (q @ k.transpose(-2, -1)) * self.scale

        attn = self.get_attn(raw_attn)  # Gumbel softmax (hard softmax over the groups, dim=-2, in eval)
        if return_attn:
            hard_attn = attn.clone()
            soft_attn = self.get_attn(raw_attn, gumbel=False, hard=False)
            attn_dict = {'hard': hard_attn, 'soft': soft_attn}  # hard for gumbel
        else:
            attn_dict = None

        if not self.sum_assign:
            attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
        attn = self.attn_drop(attn)
        assert attn.shape == (B, self.num_heads, N, S)

        # [B, nh, N, C//nh] <- [B, nh, N, S] @ [B, nh, S, C//nh]
        out = _merge_heads(attn @ v)

        out = self.proj(out)
        out = self.proj_drop(out)
        return out, attn_dict


class NPR(nn.Module):
    """NPR: Generate the prototypes for the group tokens (models/pgseg.py)."""

    def __init__(self,
                 *,
                 dim,
                 out_dim,
                 num_output_group,
                 stage=10,
                 mom=0.9,
                 inner_dim=4096,
                 ):
        super(NPR, self).__init__()
        self.dim = dim
        self.num_output_group = num_output_group
        self.stage = stage
        self.mom = mom
        mu = torch.empty(1, num_output_group, out_dim)     # torch.Tensor(1, num_output_group, out_dim)
        mu.normal_(0, math.sqrt((2. / out_dim)))
        mu = mu / (1e-6 + mu.norm(dim=2, keepdim=True))

        self.register_buffer('mu', mu)
        self.mapping_x = ProjectMLP(in_dim=dim, inner_dim=inner_dim, out_dim=out_dim)

    def forward(self, x, group_tokens, return_attn=False, is_training=False):
        """
        Args:
            x (torch.Tensor): image tokens, [B, L, C]
            group_tokens (torch.Tensor): group tokens, [B, S_1, C]

        Returns:
            mu [B, S_1, C] (updated prototypes), attn_map [B, 1, S_1, L], recon_x [B, L, C]
        """
        stage_num = self.stage
        N, G, C = group_tokens.shape
        mu = self.mu.repeat(N, 1, 1)
        x_id = x
        with torch.no_grad():
            for i in range(stage_num):
                z = torch.matmul(x_id, mu.permute(0, 2, 1))
                z = F.softmax(z, dim=-1)
                z = z / (1e-6 + z.sum(dim=1, keepdim=True))
                mu = torch.matmul(z.permute(0, 2, 1), x_id)
                mu = mu / (1e-6 + mu.norm(dim=2, keepdim=True))

        recon_x = torch.matmul(z, mu)
        recon_x = self.mapping_x(recon_x)
        new_z = torch.matmul(x_id, mu.permute(0, 2, 1))
        new_z = F.softmax(new_z, dim=-1)
        attn_map = new_z / (1e-6 + new_z.sum(dim=1, keepdim=True))

        # momentum update (training only, needs all-gather): omitted
        assert not is_training, 'training-only path not transcribed'

        return mu, attn_map.permute(0, 2, 1).unsqueeze(1), recon_x


class GroupingBlock(nn.Module):
    """Grouping Block to group similar segments together (models/pgseg.py)."""

    def __init__(self,
                 *,
                 dim,
                 out_dim,
                 num_heads,
                 num_group_token,
                 num_output_group,
                 norm_layer,
                 mlp_ratio=(0.5, 4.0),
                 hard=True,
                 gumbel=True,
                 sum_assign=False,
                 assign_eps=1.,
                 gumbel_tau=1.):
        super(GroupingBlock, self).__init__()
        self.dim = dim
        self.hard = hard
        self.gumbel = gumbel
        self.sum_assign = sum_assign
        self.num_output_group = num_output_group
        # norm on group_tokens
        self.norm_tokens = norm_layer(dim)
        tokens_dim, channels_dim = [int(x * dim) for x in to_2tuple(mlp_ratio)]
        self.mlp_inter = Mlp(num_group_token, tokens_dim, num_output_group)
        self.norm_post_tokens = norm_layer(dim)
        # norm on x
        self.norm_x = norm_layer(dim)
        self.pre_assign_attn = CrossAttnBlock(
            dim=dim, num_heads=num_heads, mlp_ratio=4, qkv_bias=True, norm_layer=norm_layer, post_norm=True)

        self.assign = AssignAttention(
            dim=dim,
            num_heads=1,
            qkv_bias=True,
            hard=hard,
            gumbel=gumbel,
            gumbel_tau=gumbel_tau,
            sum_assign=sum_assign,
            assign_eps=assign_eps)
        self.norm_new_x = norm_layer(dim)
        self.mlp_channels = Mlp(dim, channels_dim, out_dim)
        if out_dim is not None and dim != out_dim:
            self.reduction = nn.Sequential(norm_layer(dim), nn.Linear(dim, out_dim, bias=False))
        else:
            self.reduction = nn.Identity()

    def project_group_token(self, group_tokens):
        # [B, S_2, C] <- [B, S_1, C]
        projected_group_tokens = self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2)
        projected_group_tokens = self.norm_post_tokens(projected_group_tokens)
        return projected_group_tokens

    def forward(self, x, group_tokens, return_attn=False):
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)

        # [B, S_2, C]
        projected_group_tokens = self.project_group_token(group_tokens)
        projected_group_tokens = self.pre_assign_attn(projected_group_tokens, x)

        new_x, attn_dict = self.assign(projected_group_tokens, x, return_attn=return_attn)
        new_x += projected_group_tokens  # Residual part in Grouping block
        new_x = self.reduction(new_x) + self.mlp_channels(self.norm_new_x(new_x))
        # PGSeg: fails with return_attn=False (attn_dict is None); every PGSeg caller passes return_attn=True
        attn_dict['ori_center'] = projected_group_tokens
        attn_dict['ori_center_for_text'] = projected_group_tokens

        return new_x, attn_dict


class GroupViTGroupingBlock(GroupingBlock):
    """NVlabs models/group_vit.py GroupingBlock: same modules, no 'ori_center' entries."""

    def forward(self, x, group_tokens, return_attn=False):
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        # [B, S_2, C]
        projected_group_tokens = self.project_group_token(group_tokens)
        projected_group_tokens = self.pre_assign_attn(projected_group_tokens, x)
        new_x, attn_dict = self.assign(projected_group_tokens, x, return_attn=return_attn)
        new_x += projected_group_tokens

        new_x = self.reduction(new_x) + self.mlp_channels(self.norm_new_x(new_x))

        return new_x, attn_dict


class Attention(nn.Module):

    def __init__(self,
                 dim,
                 num_heads,
                 out_dim=None,
                 qkv_bias=False,
                 qk_scale=None,
                 attn_drop=0.,
                 proj_drop=0.,
                 qkv_fuse=False,
                 return_attn=False):
        super().__init__()
        if out_dim is None:
            out_dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.qkv_fuse = qkv_fuse

        if qkv_fuse:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.return_attn = return_attn

    def forward(self, query, key=None, *, value=None, mask=None):
        if self.qkv_fuse:
            assert key is None
            assert value is None
            x = query
            B, N, C = x.shape
            S = N
            # [3, B, nh, N, C//nh]
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            # [B, nh, N, C//nh]
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            B, N, C = query.shape
            if key is None:
                key = query
            if value is None:
                value = key
            S = key.size(1)
            q = _split_heads(self.q_proj(query), self.num_heads)
            k = _split_heads(self.k_proj(key), self.num_heads)
            v = _split_heads(self.v_proj(value), self.num_heads)

        # [B, nh, N, S]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn_return = attn

        if mask is not None:
            attn = attn + mask.unsqueeze(dim=1)
            attn = attn.softmax(dim=-1)
        else:
            attn = attn.softmax(dim=-1)

        attn = self.attn_drop(attn)
        assert attn.shape == (B, self.num_heads, N, S)

        # [B, nh, N, C//nh] -> [B, N, C]
        out = _merge_heads(attn @ v)
        out = self.proj(out)
        out = self.proj_drop(out)
        if self.return_attn:
            return out, attn_return
        else:
            return out


class CrossAttnBlock(nn.Module):

    def __init__(self,
                 dim,
                 num_heads,
                 mlp_ratio=4.,
                 qkv_bias=False,
                 qk_scale=None,
                 drop=0.,
                 attn_drop=0.,
                 drop_path=0.,
                 act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm,
                 post_norm=False):
        super().__init__()
        if post_norm:
            self.norm_post = norm_layer(dim)
            self.norm_q = nn.Identity()
            self.norm_k = nn.Identity()
        else:
            self.norm_q = norm_layer(dim)
            self.norm_k = norm_layer(dim)
            self.norm_post = nn.Identity()
        self.attn = Attention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = nn.Identity()          # DropPath(drop_path) in training
        self.norm2 = norm_layer(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

    def forward(self, query, key, *, mask=None):
        x = query
        x = x + self.drop_path(self.attn(self.norm_q(query), self.norm_k(key), mask=mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        x = self.norm_post(x)
        return x


class AttnBlock(nn.Module):

    def __init__(self,
                 dim,
                 num_heads,
                 mlp_ratio=4.,
                 qkv_bias=False,
                 qk_scale=None,
                 drop=0.,
                 attn_drop=0.,
                 drop_path=0.,
                 act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm,
                 return_attn=False):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            qkv_fuse=True,
            return_attn=return_attn)
        self.return_attn = return_attn
        self.drop_path = nn.Identity()          # DropPath(drop_path) in training
        self.norm2 = norm_layer(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

    def forward(self, x, mask=None):
        if self.return_attn:
            out, attn = self.attn(self.norm1(x), mask=mask)
            x = x + self.drop_path(out)
        else:
            x = x + self.drop_path(self.attn(self.norm1(x), mask=mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.return_attn:
            return x, attn
        else:
            return x


class GroupingLayer(nn.Module):
    """A Transformer layer with Grouping Block for one stage (models/pgseg.py)."""

    def __init__(self,
                 dim,
                 num_input_token,
                 depth,
                 num_heads,
                 num_group_token,
                 mlp_ratio=4.,
                 qkv_bias=True,
                 qk_scale=None,
                 drop=0.,
                 attn_drop=0.,
                 drop_path=0.,
                 norm_layer=nn.LayerNorm,
                 downsample=None,
                 use_checkpoint=False,
                 group_projector=None,
                 zero_init_group_token=False,
                 return_attn_o=True,
                 npr=None):

        super().__init__()
        self.dim = dim
        self.input_length = num_input_token
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.num_group_token = num_group_token
        if num_group_token > 0:
            self.group_token = nn.Parameter(torch.zeros(1, num_group_token, dim))
            if not zero_init_group_token:
                trunc_normal_(self.group_token, std=.02)
        else:
            self.group_token = None

        # build blocks
        self.depth = depth
        self.return_attn = return_attn_o

        blocks = []
        for i in range(depth):
            blocks.append(
                AttnBlock(
                    dim=dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i],
                    norm_layer=norm_layer,
                    return_attn=self.return_attn))
        self.blocks = nn.ModuleList(blocks)

        self.downsample = downsample
        self.downsample_spatial = npr
        self.input_resolution = num_input_token

        self.group_projector = group_projector

    @property
    def with_group_token(self):
        return self.group_token is not None

    def split_x(self, x):
        if self.with_group_token:
            return x[:, :-self.num_group_token], x[:, -self.num_group_token:]
        else:
            return x, None

    def concat_x(self, x, group_token=None):
        if group_token is None:
            return x
        return torch.cat([x, group_token], dim=1)

    def forward(self, x, prev_group_token=None, return_attn=False):
        if self.with_group_token:
            group_token = self.group_token.expand(x.size(0), -1, -1)
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
        else:
            group_token = None
        if self.return_attn:
            self.return_attn_list = []

        inp_x = x
        cat_x = self.concat_x(x, group_token)
        for blk_idx, blk in enumerate(self.blocks):
            if self.return_attn:
                cat_x, attn = blk(cat_x)
            else:
                cat_x = blk(cat_x)

        ori_x, group_token = self.split_x(cat_x)

        attn_dict = None
        if self.downsample_spatial is not None:
            # NPR on the stage's INPUT tokens (before the transformer blocks)
            low_group, attn_map, re_x = self.downsample_spatial(inp_x, group_token, return_attn=False)
            self.return_attn_list.extend([low_group, attn_map])

        if self.downsample is not None:
            ori_x, attn_dict = self.downsample(ori_x + re_x, group_token, return_attn=return_attn)  # GroupBlocking

        if self.return_attn:
            return ori_x, group_token, attn_dict, self.return_attn_list

        else:
            return x, group_token, attn_dict          # sic: the authors return the layer's input here


class GroupViTGroupingLayer(GroupingLayer):
    """NVlabs models/group_vit.py GroupingLayer: no NPR, blocks without attention return."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, return_attn_o=False, npr=None, **kwargs)

    def forward(self, x, prev_group_token=None, return_attn=False):
        if self.with_group_token:
            group_token = self.group_token.expand(x.size(0), -1, -1)
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
        else:
            group_token = None

        B, L, C = x.shape
        cat_x = self.concat_x(x, group_token)
        for blk_idx, blk in enumerate(self.blocks):
            cat_x = blk(cat_x)

        x, group_token = self.split_x(cat_x)

        attn_dict = None
        if self.downsample is not None:
            x, attn_dict = self.downsample(x, group_token, return_attn=return_attn)

        return x, group_token, attn_dict


class PatchEmbed(nn.Module):
    """Image to Patch Embedding."""

    def __init__(self, img_size=224, kernel_size=7, stride=4, padding=2, in_chans=3, embed_dim=96, norm_layer=None):
        super().__init__()
        img_size = to_2tuple(img_size)
        kernel_size = to_2tuple(kernel_size)
        stride = to_2tuple(stride)
        padding = to_2tuple(padding)
        self.img_size = img_size
        self.patches_resolution = (
            int((img_size[1] + 2 * padding[1] - kernel_size[1]) / stride[1] + 1),
            int((img_size[0] + 2 * padding[0] - kernel_size[0]) / stride[0] + 1),
        )

        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)
        if norm_layer is not None:
            self.norm = norm_layer(embed_dim)
        else:
            self.norm = None

    @property
    def num_patches(self):
        return self.patches_resolution[1] * self.patches_resolution[0]

    def forward(self, x):
        B, C, H, W = x.shape
        if self.training:
            assert H == self.img_size[0] and W == self.img_size[1], \
                f"Input image size ({H}*{W}) doesn't match model ({self.img_size[0]}*{self.img_size[1]})."
        x = self.proj(x)
        hw_shape = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw_shape


def _init_weights(m):
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


class PGSeg(nn.Module):
    """models/pgseg.py PGSeg (the image encoder, ``img_encoder``)."""

    def __init__(self,
                 img_size=224,
                 patch_size=16,
                 in_chans=3,
                 num_classes=0,
                 embed_dim=384,
                 embed_factors=[1, 1, 1],
                 depths=[6, 3, 3],
                 num_heads=[6, 6, 6],
                 num_group_tokens=[64, 8, 0],
                 num_output_groups=[64, 8],
                 hard_assignment=True,
                 mlp_ratio=4.,
                 qkv_bias=True,
                 qk_scale=None,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.1,
                 patch_norm=True,
                 use_checkpoint=False,
                 pos_embed_type='simple',
                 freeze_patch_embed=False,
                 return_attn_o=True,
                 npr_inner_dim=4096,
                 mapping_text_out_dim=256):
        super().__init__()
        assert patch_size in [4, 8, 16]
        self.num_classes = num_classes
        assert len(embed_factors) == len(depths) == len(num_group_tokens)
        assert all(_ == 0 for _ in num_heads) or len(depths) == len(num_heads)
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.patch_norm = patch_norm
        self.num_features = int(embed_dim * embed_factors[len(depths) - 1])
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.qk_scale = qk_scale
        self.drop_rate = drop_rate
        self.attn_drop_rate = attn_drop_rate
        self.drop_path_rate = drop_path_rate
        self.num_group_tokens = num_group_tokens
        self.num_output_groups = num_output_groups
        self.pos_embed_type = pos_embed_type
        self.return_attn_o = return_attn_o
        assert pos_embed_type == 'simple'

        norm_layer = nn.LayerNorm

        # split image into non-overlapping patches
        self.patch_embed = PatchEmbed(
            img_size=img_size,
            kernel_size=patch_size,
            stride=patch_size,
            padding=0,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if self.patch_norm else None)
        num_patches = self.patch_embed.num_patches
        patches_resolution = self.patch_embed.patches_resolution
        self.patches_resolution = patches_resolution

        self.avgpool = nn.AdaptiveAvgPool1d(1)

        self.pos_embed = self.build_simple_position_embedding()

        self.pos_drop = nn.Dropout(p=drop_rate)

        # stochastic depth (unused in eval; computed on the CPU so the model can be built on 'meta')
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu')]

        num_input_token = num_patches
        num_output_token = num_input_token

        # build layers
        self.layers = nn.ModuleList()
        for i_layer in range(self.num_layers):

            dim = int(embed_dim * embed_factors[i_layer])
            downsample = None
            downsample_npr = None
            if i_layer < self.num_layers - 1:
                out_dim = embed_dim * embed_factors[i_layer + 1]
                downsample = GroupingBlock(
                    dim=dim,
                    out_dim=out_dim,
                    num_heads=num_heads[i_layer],
                    num_group_token=num_group_tokens[i_layer],
                    num_output_group=num_output_groups[i_layer],
                    norm_layer=norm_layer,
                    hard=hard_assignment,
                    gumbel=hard_assignment)

                downsample_npr = NPR(
                    dim=dim,
                    out_dim=out_dim,
                    num_output_group=num_output_groups[i_layer],
                    inner_dim=npr_inner_dim)

                num_output_token = num_output_groups[i_layer]

            if i_layer > 0 and num_group_tokens[i_layer] > 0:
                prev_dim = int(embed_dim * embed_factors[i_layer - 1])
                group_projector = nn.Sequential(
                    norm_layer(prev_dim),
                    MixerMlp(num_group_tokens[i_layer - 1], prev_dim // 2, num_group_tokens[i_layer]))

                if dim != prev_dim:
                    group_projector = nn.Sequential(group_projector, norm_layer(prev_dim),
                                                    nn.Linear(prev_dim, dim, bias=False))
            else:
                group_projector = None
            layer = GroupingLayer(
                dim=dim,
                num_input_token=num_input_token,
                depth=depths[i_layer],
                num_heads=num_heads[i_layer],
                num_group_token=num_group_tokens[i_layer],
                mlp_ratio=self.mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i_layer]):sum(depths[:i_layer + 1])],
                norm_layer=norm_layer,
                downsample=downsample,
                use_checkpoint=use_checkpoint,
                group_projector=group_projector,
                # only zero init group token if we have a projection
                zero_init_group_token=group_projector is not None,
                return_attn_o=self.return_attn_o,
                npr=downsample_npr)
            self.layers.append(layer)
            if i_layer < self.num_layers - 1:
                num_input_token = num_output_token

        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        self.mapping_text = ProjectMLP(in_dim=embed_dim, inner_dim=npr_inner_dim, out_dim=mapping_text_out_dim)
        self.apply(_init_weights)
        contrast_t = 0.1
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / contrast_t))

    def build_simple_position_embedding(self):
        pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, self.embed_dim))
        trunc_normal_(pos_embed, std=.02)
        return pos_embed

    @property
    def width(self):
        return self.num_features

    def get_pos_embed(self, B, H, W):
        # 'simple' mode
        if self.training:
            return self.pos_embed
        pos_embed = self.pos_embed
        pos_embed = interpolate_pos_encoding(pos_embed, H, W)
        return pos_embed

    def forward_features(self, x, *, return_attn=False):
        B = x.shape[0]
        x, hw_shape = self.patch_embed(x)
        img_embed = x + self.get_pos_embed(B, *hw_shape)
        x = self.pos_drop(img_embed)  # Drop_out
        group_token = None
        attn_dict_list = []
        if self.return_attn_o:
            self.return_attn_o_list = []

        for layer in self.layers:
            if self.return_attn_o:
                x, group_token, attn_dict, attn_o_list = layer(x, group_token, return_attn=return_attn)
                self.return_attn_o_list.append(attn_o_list)
            else:
                x, group_token, attn_dict = layer(x, group_token, return_attn=return_attn)

            attn_dict_list.append(attn_dict)

        x = self.norm(x)

        if self.return_attn_o:
            return x, group_token, attn_dict_list, self.return_attn_o_list
        else:
            return x, group_token, attn_dict_list, []

    def forward_image_head(self, x):
        # [B, L, C]
        x = self.avgpool(x.transpose(1, 2)[:, :, -self.num_group_tokens[0]:])  # B C 1
        x = torch.flatten(x, 1)
        x = self.head(x)

        return x

    def forward(self, x, *, return_feat=False, return_attn=False, as_dict=False, return_pgloss=False, text=None):
        assert not return_pgloss, 'training-only path (forward_with_NPR) not transcribed'

        x, group_token, attn_dicts, attn_o_list = self.forward_features(x, return_attn=return_attn)

        x_feat = x if return_feat else None

        outs = Result(as_dict=as_dict)

        pred_x = self.forward_image_head(x)

        outs.append(pred_x, name='x')

        if return_feat:
            outs.append(x_feat, name='feat')

        if return_attn:
            outs.append(attn_dicts, name='attn_dicts')

        return outs.as_return()


class GroupViT(nn.Module):
    """NVlabs models/group_vit.py GroupViT (the image encoder without NPR)."""

    def __init__(self,
                 img_size=224,
                 patch_size=16,
                 in_chans=3,
                 num_classes=0,
                 embed_dim=384,
                 embed_factors=[1, 1, 1],
                 depths=[6, 3, 3],
                 num_heads=[6, 6, 6],
                 num_group_tokens=[64, 8, 0],
                 num_output_groups=[64, 8],
                 hard_assignment=True,
                 mlp_ratio=4.,
                 qkv_bias=True,
                 qk_scale=None,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.1,
                 patch_norm=True,
                 use_checkpoint=False,
                 pos_embed_type='simple',
                 freeze_patch_embed=False):
        super().__init__()
        assert patch_size in [4, 8, 16]
        self.num_classes = num_classes
        assert len(embed_factors) == len(depths) == len(num_group_tokens)
        assert all(_ == 0 for _ in num_heads) or len(depths) == len(num_heads)
        assert len(depths) - 1 == len(num_output_groups)
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.patch_norm = patch_norm
        self.num_features = int(embed_dim * embed_factors[len(depths) - 1])
        self.mlp_ratio = mlp_ratio
        self.num_group_tokens = num_group_tokens
        self.num_output_groups = num_output_groups
        self.pos_embed_type = pos_embed_type
        assert pos_embed_type == 'simple'

        norm_layer = nn.LayerNorm

        self.patch_embed = PatchEmbed(
            img_size=img_size,
            kernel_size=patch_size,
            stride=patch_size,
            padding=0,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if self.patch_norm else None)
        num_patches = self.patch_embed.num_patches
        self.patches_resolution = self.patch_embed.patches_resolution

        self.avgpool = nn.AdaptiveAvgPool1d(1)

        self.pos_embed = self.build_simple_position_embedding()

        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu')]

        num_input_token = num_patches
        num_output_token = num_input_token
        # build layers
        self.layers = nn.ModuleList()
        for i_layer in range(self.num_layers):

            dim = int(embed_dim * embed_factors[i_layer])
            downsample = None
            if i_layer < self.num_layers - 1:
                out_dim = embed_dim * embed_factors[i_layer + 1]
                downsample = GroupViTGroupingBlock(
                    dim=dim,
                    out_dim=out_dim,
                    num_heads=num_heads[i_layer],
                    num_group_token=num_group_tokens[i_layer],
                    num_output_group=num_output_groups[i_layer],
                    norm_layer=norm_layer,
                    hard=hard_assignment,
                    gumbel=hard_assignment)
                num_output_token = num_output_groups[i_layer]

            if i_layer > 0 and num_group_tokens[i_layer] > 0:
                prev_dim = int(embed_dim * embed_factors[i_layer - 1])
                group_projector = nn.Sequential(
                    norm_layer(prev_dim),
                    MixerMlp(num_group_tokens[i_layer - 1], prev_dim // 2, num_group_tokens[i_layer]))

                if dim != prev_dim:
                    group_projector = nn.Sequential(group_projector, norm_layer(prev_dim),
                                                    nn.Linear(prev_dim, dim, bias=False))
            else:
                group_projector = None
            layer = GroupViTGroupingLayer(
                dim=dim,
                num_input_token=num_input_token,
                depth=depths[i_layer],
                num_heads=num_heads[i_layer],
                num_group_token=num_group_tokens[i_layer],
                mlp_ratio=self.mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i_layer]):sum(depths[:i_layer + 1])],
                norm_layer=norm_layer,
                downsample=downsample,
                use_checkpoint=use_checkpoint,
                group_projector=group_projector,
                zero_init_group_token=group_projector is not None)
            self.layers.append(layer)
            if i_layer < self.num_layers - 1:
                num_input_token = num_output_token

        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        self.apply(_init_weights)

    def build_simple_position_embedding(self):
        pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, self.embed_dim))
        trunc_normal_(pos_embed, std=.02)
        return pos_embed

    @property
    def width(self):
        return self.num_features

    def get_pos_embed(self, B, H, W):
        if self.training:
            return self.pos_embed
        pos_embed = self.pos_embed
        pos_embed = interpolate_pos_encoding(pos_embed, H, W)
        return pos_embed

    def forward_features(self, x, *, return_attn=False):
        B = x.shape[0]
        x, hw_shape = self.patch_embed(x)

        x = x + self.get_pos_embed(B, *hw_shape)
        x = self.pos_drop(x)

        group_token = None
        attn_dict_list = []
        for layer in self.layers:
            x, group_token, attn_dict = layer(x, group_token, return_attn=return_attn)
            attn_dict_list.append(attn_dict)

        x = self.norm(x)

        return x, group_token, attn_dict_list

    def forward_image_head(self, x):
        # [B, L, C]
        x = self.avgpool(x.transpose(1, 2))  # B C 1
        x = torch.flatten(x, 1)
        x = self.head(x)

        return x

    def forward(self, x, *, return_feat=False, return_attn=False, as_dict=False):
        x, group_token, attn_dicts = self.forward_features(x, return_attn=return_attn)
        x_feat = x if return_feat else None

        outs = Result(as_dict=as_dict)

        outs.append(self.forward_image_head(x), name='x')

        if return_feat:
            outs.append(x_feat, name='feat')

        if return_attn:
            outs.append(attn_dicts, name='attn_dicts')

        return outs.as_return()


# --------------------------------------------------------------------------------------------------------------
# models/utils.py + models/transformer.py (text encoder)
# --------------------------------------------------------------------------------------------------------------
class QuickGELU(nn.Module):

    def forward(self, x: torch.Tensor):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):

    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor = None):
        super().__init__()

        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict([('c_fc', nn.Linear(d_model, d_model * 4)), ('gelu', QuickGELU()),
                         ('c_proj', nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = nn.LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x: torch.Tensor, key_padding_mask: torch.Tensor):
        self.attn_mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask, key_padding_mask=key_padding_mask)[0]

    def forward(self, x: torch.Tensor, key_padding_mask=None):
        x = x + self.attention(self.ln_1(x), key_padding_mask=key_padding_mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):

    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor = None, use_checkpoint=False):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])
        proj_std = (self.width ** -0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor):
        for resblock in self.resblocks:
            x = resblock(x)
        return x


class TextNPR(nn.Module):
    """models/transformer.py NPR (``text_encoder.Atten``): only the ``mu`` buffer [1, G, 1]."""

    def __init__(self, *, num_output_group=8):
        super(TextNPR, self).__init__()
        self.num_output_group = num_output_group
        mu = torch.empty(1, num_output_group, 1)        # torch.Tensor(1, num_output_group, 1)
        mu.normal_(0, math.sqrt((2. / num_output_group)))
        mu = mu / (1e-6 + mu.norm(dim=1, keepdim=True))
        self.register_buffer('mu', mu)

    def forward(self, x):
        stage_num = 10
        N, C = x.shape
        mu = self.mu.repeat(N, 1, 1)
        x_id = x.view(N, C, 1)
        with torch.no_grad():
            for _ in range(stage_num):
                z = torch.matmul(x_id, mu.permute(0, 2, 1))
                z = F.softmax(z, dim=-1)
                z = z / (1e-6 + z.sum(dim=1, keepdim=True))
                mu = torch.matmul(z.permute(0, 2, 1), x_id)
                mu = mu / (1e-6 + mu.norm(dim=1, keepdim=True))
        # authors: self.mu = mom * self.mu + (1 - mom) * dist_collect(mu).mean(0, keepdim=True) on EVERY call,
        # eval included (needs torch.distributed); omitted: its result is never used at inference.
        return mu


class TextTransformer(nn.Module):

    def __init__(
            self,
            context_length: int,
            width: int,
            layers: int,
            vocab_size,
            use_checkpoint=False,
            heads=None,
            npr=True,
    ):
        super().__init__()
        if heads is None:
            heads = width // 64
        self.context_length = context_length
        self.width = width
        self.npr = npr
        self.transformer = Transformer(
            width=width,
            layers=layers,
            heads=heads,
            attn_mask=self.build_attention_mask(),
            use_checkpoint=use_checkpoint)

        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

        # initialization
        nn.init.normal_(self.positional_embedding, std=0.01)
        if npr:
            self.Atten = TextNPR()

    def build_attention_mask(self):
        # lazily create causal attention mask, with full attention between the vision tokens
        # pytorch uses additive attention mask; fill with -inf
        mask = torch.empty(self.context_length, self.context_length)
        mask.fill_(float('-inf'))
        mask.triu_(1)  # zero out the lower diagonal
        return mask

    def forward(self, text, *, as_dict=False):
        x = self.token_embedding(text)
        outs = Result(as_dict=as_dict)
        x = x + self.positional_embedding

        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x)

        # x.shape = [batch_size, n_ctx, transformer.width]
        # take features from the eot embedding (eot_token is the highest number in each sequence)
        f_x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]
        outs.append(f_x, name='x')
        if self.npr:
            r_x = self.Atten(f_x.detach())
            outs.append(r_x, name='r_x')

        return outs.as_return()


# --------------------------------------------------------------------------------------------------------------
# models/multi_label_contrastive.py
# --------------------------------------------------------------------------------------------------------------
class MultiLabelContrastive(nn.Module):
    """The top-level model (checkpoint['model'] keys). ``npr=False`` builds NVlabs GroupViT.

    ``num_heads`` may be an int (same for every stage) or a list; ``text_heads`` defaults to the authors'
    ``text_width // 64``.
    """

    def __init__(self,
                 *,
                 npr=True,
                 img_size=224,
                 patch_size=16,
                 embed_dim=384,
                 depths=(6, 3, 3),
                 num_heads=6,
                 num_group_tokens=(64, 8, 0),
                 num_output_groups=(64, 8),
                 npr_inner_dim=4096,
                 mapping_text_out_dim=256,
                 context_length=77,
                 text_width=256,
                 text_layers=12,
                 text_heads=None,
                 vocab_size=49408,
                 proj_inner_dim=4096,
                 output_dim=256,
                 contrast_temperature=0.07,
                 proj_num_layers=2,
                 device=None):
        super().__init__()
        depths = list(depths)
        if isinstance(num_heads, int):
            num_heads = [num_heads] * len(depths)
        self.npr = npr
        with torch.device(device) if device is not None else contextlib.nullcontext():
            if npr:
                self.img_encoder = PGSeg(
                    img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, embed_factors=[1] * len(depths),
                    depths=depths, num_heads=list(num_heads), num_group_tokens=list(num_group_tokens),
                    num_output_groups=list(num_output_groups), drop_rate=0.0, drop_path_rate=0.1,
                    return_attn_o=True, npr_inner_dim=npr_inner_dim, mapping_text_out_dim=mapping_text_out_dim)
            else:
                self.img_encoder = GroupViT(
                    img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, embed_factors=[1] * len(depths),
                    depths=depths, num_heads=list(num_heads), num_group_tokens=list(num_group_tokens),
                    num_output_groups=list(num_output_groups), drop_rate=0.0, drop_path_rate=0.1)
            self.text_encoder = TextTransformer(
                context_length=context_length, width=text_width, layers=text_layers, vocab_size=vocab_size,
                heads=text_heads, npr=npr)

            self.contrast_temperature = contrast_temperature
            self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / contrast_temperature))

            self.proj_num_layers = proj_num_layers
            if proj_num_layers > 0:
                # SyncBatchNorm in the authors' code (convert_sync_batchnorm): same keys, same eval behaviour
                self.img_projector = ProjectMLP(
                    in_dim=self.img_encoder.width, inner_dim=proj_inner_dim, num_layers=proj_num_layers,
                    out_dim=output_dim)
                self.text_projector = ProjectMLP(
                    in_dim=self.text_encoder.width, inner_dim=proj_inner_dim, num_layers=proj_num_layers,
                    out_dim=output_dim)
            else:
                self.img_projector = nn.Identity()
                self.text_projector = nn.Identity()

    def encode_image(self, image, *, return_feat=False, as_dict=False):
        outs = Result(as_dict)
        if self.npr:
            # PGSeg: the image encoder is always run with return_attn=True
            img_outs = self.img_encoder(image, return_feat=return_feat, as_dict=True, return_attn=True,
                                        return_pgloss=False, text=None)
            outs.append(self.img_projector(img_outs['x']), 'image_x')
            outs.append(img_outs['attn_dicts'], 'cross_attn')
        else:
            img_outs = self.img_encoder(image, return_feat=return_feat, as_dict=True)
            outs.append(self.img_projector(img_outs['x']), 'image_x')
        if return_feat:
            outs.append(self.img_projector(img_outs['feat']), 'image_feat')
        return outs.as_return()

    def encode_text(self, text, *, as_dict=False):
        assert text.ndim in [2, 3], text.ndim
        squeeze_dim = False
        num_text = 1
        if text.ndim == 3:
            num_text = text.shape[1]
            text = text.reshape(-1, text.shape[-1])     # rearrange(text, 'b n l -> (b n) l')
            squeeze_dim = True

        outs = Result(as_dict=as_dict)
        # [B, C]
        x = self.text_encoder(text)
        if self.npr:
            text_x = self.text_projector(x[0])
            outs.append(text_x, 'text_x')
            outs.append(x[1], 'text_mu')
        else:
            text_x = self.text_projector(x)
            outs.append(text_x, 'text_x')
        if squeeze_dim:
            text_x = text_x.reshape(-1, num_text, text_x.shape[-1])     # '(b n) c -> b n c'
            text_multi_label_x = text_x[:, 1:]
            text_x = text_x[:, 0]
            outs.update(text_x=text_x, text_multi_label_x=text_multi_label_x)

        return outs.as_return()

    @torch.no_grad()
    def build_text_embedding(self, text):
        return build_text_embedding(self, text)


@torch.no_grad()
def build_text_embedding(model, text):
    """multi_label_contrastive.build_text_embedding: text [NUM_CLASSES, NUM_TEMPLATES, CONTEXT_LENGTH] -> [N, C]."""
    text = text.to(next(model.parameters()).device)
    num_classes, num_templates = text.shape[:2]
    text = text.reshape(num_classes * num_templates, text.shape[2])       # 'n t l -> (n t) l'
    text_tokens = model.encode_text(text)
    if model.npr:
        text_tokens = text_tokens[0]        # PGSeg's encode_text returns (text_x, text_mu)
    # [N, T, C]
    text_tokens = text_tokens.reshape(num_classes, num_templates, text_tokens.shape[-1])   # '(n t) c -> n t c'
    # [N, C]
    text_tokens = text_tokens.mean(dim=1)
    text_tokens = F.normalize(text_tokens, dim=-1)

    return text_tokens


# --------------------------------------------------------------------------------------------------------------
# segmentation/evaluation/pgseg_seg.py
# --------------------------------------------------------------------------------------------------------------
def resize_attn_map(attentions, h, w, align_corners=False):
    """attentions [B, num_head, H*W, groups] -> [B, num_head, h, w, groups]."""
    scale = (h * w // attentions.shape[2]) ** 0.5

    if h > w:
        w_featmap = w // int(np.round(scale))
        h_featmap = attentions.shape[2] // w_featmap
    else:
        h_featmap = h // int(np.round(scale))
        w_featmap = attentions.shape[2] // h_featmap
    assert attentions.shape[
               2] == h_featmap * w_featmap, f'{attentions.shape[2]} = {h_featmap} x {w_featmap}, h={h}, w={w}'

    bs = attentions.shape[0]
    nh = attentions.shape[1]  # number of head
    groups = attentions.shape[3]  # number of group token
    # [bs, nh, h*w, groups] -> [bs*nh, groups, h, w]
    attentions = attentions.reshape(bs, nh, h_featmap, w_featmap, groups).permute(0, 1, 4, 2, 3).reshape(
        bs * nh, groups, h_featmap, w_featmap)

    attentions = F.interpolate(attentions, size=(h, w), mode='bilinear', align_corners=align_corners)
    #  [bs*nh, groups, h, w] -> [bs, nh, h, w, groups]
    attentions = attentions.reshape(bs, nh, groups, h, w).permute(0, 1, 3, 4, 2)

    return attentions


class PGSegInference:
    """PGSegInference (an mmseg EncoderDecoder in the authors' code): get_attn_maps and encode_decode.

    After each encode_decode, ``group_affinity_mat`` holds the final group-class score matrix [G, C] (after
    ``*= pre_group_affinity_mat``), ``attn_map`` the [H, W, G] final-stage soft assignment at the crop size;
    ``group_affinity_mats`` collects the matrices of every call (one per crop in slide mode).
    """

    def __init__(self, model, text_embedding, with_bg, bg_thresh=.95):
        self.model = model
        # [N, C]
        self.text_embedding = text_embedding
        self.with_bg = with_bg
        self.bg_thresh = bg_thresh
        if self.with_bg:
            self.num_classes = len(text_embedding) + 1
        else:
            self.num_classes = len(text_embedding)
        self.align_corners = False
        self.group_affinity_mat = None
        self.attn_map = None
        self.group_affinity_mats = []

    @torch.no_grad()
    def get_attn_maps(self, img, return_onehot=False, rescale=False):
        """img [B, C, H, W] -> list of [B, H, W, groups] attention maps (one per grouping stage)."""
        results = self.model.img_encoder(img, return_attn=True, as_dict=True)

        attn_maps = []
        with torch.no_grad():
            prev_attn_masks = None
            for idx, attn_dict in enumerate(results['attn_dicts']):
                if attn_dict is None:
                    assert idx == len(results['attn_dicts']) - 1, 'only last layer can be None'
                    continue
                # [B, nH, G, HxW] -> [B, nH, HxW, G]
                attn_masks = attn_dict['soft']
                attn_masks = attn_masks.permute(0, 1, 3, 2)     # rearrange 'b h g n -> b h n g'
                if prev_attn_masks is None:
                    prev_attn_masks = attn_masks
                else:
                    prev_attn_masks = prev_attn_masks @ attn_masks
                # [B, nH, HxW, G] -> [B, nH, H, W, G]
                attn_maps.append(resize_attn_map(prev_attn_masks, *img.shape[-2:]))

        for i in range(len(attn_maps)):
            attn_map = attn_maps[i]
            # [B, nh, H, W, G]
            assert attn_map.shape[1] == 1
            # [B, H, W, G]
            attn_map = attn_map.squeeze(1)

            if rescale:
                attn_map = attn_map.permute(0, 3, 1, 2)          # 'b h w g -> b g h w'
                attn_map = F.interpolate(
                    attn_map, size=img.shape[2:], mode='bilinear', align_corners=self.align_corners)
                attn_map = attn_map.permute(0, 2, 3, 1)          # 'b g h w -> b h w g'

            if return_onehot:
                # [B, H, W, G]
                attn_map = F.one_hot(attn_map.argmax(dim=-1), num_classes=attn_map.shape[-1]).to(dtype=attn_map.dtype)

            attn_maps[i] = attn_map

        return attn_maps

    @torch.no_grad()
    def encode_decode(self, img, img_metas=None):
        """img [1, 3, h, w] -> pred_logits [1, num_classes, h, w]."""
        assert img.shape[0] == 1, 'batch size must be 1'

        n, _, h, w = img.shape
        attn_map = self.get_attn_maps(img, rescale=True)
        attn_map = attn_map[-1][0]

        img_outs = self.model.encode_image(img, return_feat=True, as_dict=True)
        # [B, L, C] -> [L, C]
        grouped_img_tokens = img_outs['image_feat'].squeeze(0)
        img_avg_feat = img_outs['image_x']
        # [G, C]
        grouped_img_tokens = F.normalize(grouped_img_tokens, dim=-1)
        img_avg_feat = F.normalize(img_avg_feat, dim=-1)

        # [H, W, G]
        onehot_attn_map = F.one_hot(attn_map.argmax(dim=-1), num_classes=attn_map.shape[-1]).to(dtype=attn_map.dtype)

        num_fg_classes = self.text_embedding.shape[0]
        class_offset = 1 if self.with_bg else 0
        text_tokens = self.text_embedding
        num_classes = num_fg_classes + class_offset

        logit_scale = torch.clamp(self.model.logit_scale.exp(), max=100)
        # [G, N]
        group_affinity_mat = (grouped_img_tokens @ text_tokens.T) * logit_scale
        pre_group_affinity_mat = F.softmax(group_affinity_mat, dim=-1)

        avg_affinity_mat = (img_avg_feat @ text_tokens.T) * logit_scale
        avg_affinity_mat = F.softmax(avg_affinity_mat, dim=-1)
        affinity_mask = torch.zeros_like(avg_affinity_mat)
        avg_affinity_topk = avg_affinity_mat.topk(dim=-1, k=min(5, num_fg_classes))  # only the top 5 classes
        affinity_mask.scatter_add_(
            dim=-1, index=avg_affinity_topk.indices, src=torch.ones_like(avg_affinity_topk.values))
        group_affinity_mat.masked_fill_(~affinity_mask.bool(), float('-inf'))

        group_affinity_mat = F.softmax(group_affinity_mat, dim=-1)

        # TODO: check if necessary   (sic, authors)
        group_affinity_mat *= pre_group_affinity_mat

        pred_logits = torch.zeros(num_classes, *attn_map.shape[:2], device=img.device, dtype=img.dtype)

        o_final = (onehot_attn_map @ group_affinity_mat).permute(2, 0, 1)    # 'h w c -> c h w'

        pred_logits[class_offset:] = o_final
        if self.with_bg:
            bg_thresh = min(self.bg_thresh, group_affinity_mat.max().item())
            pred_logits[0, o_final.max(dim=0).values < bg_thresh] = 1

        self.group_affinity_mat = group_affinity_mat
        self.attn_map = attn_map
        self.group_affinity_mats.append(group_affinity_mat)
        return pred_logits.unsqueeze(0)


# --------------------------------------------------------------------------------------------------------------
# mmseg 0.18 EncoderDecoder test path and the mmcv test pipeline
# --------------------------------------------------------------------------------------------------------------
def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def slide_inference(img, crop, stride, num_classes, encode_decode_fn):
    """mmseg EncoderDecoder.slide_inference without the final rescale: [1, K, h_img, w_img] logits."""
    h_stride, w_stride = _pair(stride)
    h_crop, w_crop = _pair(crop)
    batch_size, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            crop_seg_logit = encode_decode_fn(crop_img)
            preds += F.pad(crop_seg_logit,
                           (int(x1), int(preds.shape[3] - x2), int(y1),
                            int(preds.shape[2] - y2)))

            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    preds = preds / count_mat
    return preds


def whole_inference(img, encode_decode_fn):
    """mmseg EncoderDecoder.whole_inference without the final rescale."""
    return encode_decode_fn(img)


IMG_MEAN = (123.675, 116.28, 103.53)
IMG_STD = (58.395, 57.12, 57.375)


def preprocess(rgb_uint8, short_side=448):
    """mmseg test pipeline: Resize(img_scale=(2048, short_side), keep_ratio=True) with mmcv.imrescale (cv2,
    bilinear), then Normalize(mean, std, to_rgb) as mmcv.imnormalize -> [1, 3, H, W] float32."""
    h, w = rgb_uint8.shape[:2]
    max_long_edge, max_short_edge = max(2048, short_side), min(2048, short_side)
    scale_factor = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
    new_size = int(w * float(scale_factor) + 0.5), int(h * float(scale_factor) + 0.5)
    img = cv2.resize(rgb_uint8, new_size, interpolation=cv2.INTER_LINEAR)
    # mmcv.imnormalize_ (the BGR->RGB swap of to_rgb is already done: the input is RGB)
    img = img.copy().astype(np.float32)
    mean = np.float64(np.array(IMG_MEAN).reshape(1, -1))
    stdinv = 1 / np.float64(np.array(IMG_STD).reshape(1, -1))
    cv2.subtract(img, mean, img)
    cv2.multiply(img, stdinv, img)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


@torch.no_grad()
def predict_probs(model, text_embedding, rgb_uint8, *, with_bg, bg_thresh=.95, mode='slide', crop=448,
                  stride=224, short_side=448, return_inference=False):
    """mmseg inference(): logits (slide or whole) -> bilinear resize to the original size -> softmax over classes.

    Returns probs [1, K, H, W] (K = C + 1 with the background channel 0 when with_bg), and the PGSegInference
    (holding the group-class matrices) when return_inference.
    """
    img = preprocess(rgb_uint8, short_side)
    seg = PGSegInference(model, text_embedding, with_bg, bg_thresh)
    if mode == 'slide':
        seg_logit = slide_inference(img, crop, stride, seg.num_classes, seg.encode_decode)
    else:
        assert mode == 'whole', mode
        seg_logit = whole_inference(img, seg.encode_decode)
    seg_logit = F.interpolate(seg_logit, size=rgb_uint8.shape[:2], mode='bilinear', align_corners=False)
    output = F.softmax(seg_logit, dim=1)
    if return_inference:
        return output, seg
    return output


@torch.no_grad()
def predict_labels(model, text_embedding, rgb_uint8, *, with_bg, bg_thresh=.95, mode='slide', crop=448,
                   stride=224, short_side=448, return_inference=False):
    """mmseg simple_test(): argmax over predict_probs -> labels [H, W] int64 (0 = background when with_bg)."""
    output, seg = predict_probs(model, text_embedding, rgb_uint8, with_bg=with_bg, bg_thresh=bg_thresh, mode=mode,
                                crop=crop, stride=stride, short_side=short_side, return_inference=True)
    labels = output.argmax(dim=1)[0]
    if return_inference:
        return labels, seg
    return labels
